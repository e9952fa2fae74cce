"""The reading of scripts.reproduce's report: one generated paragraph saying, with the numbers, what these results
can and cannot say about the paper's claim (MT-DNN + fine-tuning beats single-task fine-tuning)."""

from __future__ import annotations

from scripts.bootstrap import Interval
from scripts.reproduce_plan import ReproducePlan


def _points(interval: Interval) -> str:
    return f"{100 * interval.delta:+.1f} points [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"


def _which(found: dict[str, Interval], tasks) -> tuple[list[str], list[str]]:
    """The tasks whose interval excludes zero (with the Δ's sign) and those whose interval includes it."""
    known = [task for task in tasks if task in found]
    clear = [f"{task} ({100 * found[task].delta:+.1f})" for task in known if found[task].excludes_zero()]
    return clear, [task for task in known if not found[task].excludes_zero()]


def _contrast(name: str, found: dict[str, Interval], tasks) -> str:
    average = found["average"]
    clear, unclear = _which(found, tasks)
    verdict = "excludes zero" if average.excludes_zero() else "includes zero"
    return (f"Against {name}, arm 3's small-task average differs by {_points(average)}, an interval that {verdict}; "
            f"per task the interval excludes zero on {', '.join(clear) or 'none'}"
            + (f" and includes it on {', '.join(unclear)}" if unclear else "") + ".")


def reading(plan: ReproducePlan, found: dict[str, dict[str, Interval]], tasks, not_learnt: list[str],
            dev_sizes: dict[str, int]) -> str:
    """The paragraph; `found`: baseline -> task/"average" -> interval of arm 3 − baseline; `not_learnt`: tasks whose
    arm 1 missed its floor at an accepted budget."""
    if "average" not in found.get("single", {}) or "average" not in found.get("control", {}):
        return "Not every arm has results with predictions yet: no reading."
    single, control = found["single"]["average"], found["control"]["average"]
    sentences = [_contrast("single-task fine-tuning (arm 1)", found["single"], tasks),
                 _contrast("the equal-passes control", found["control"], tasks)]
    if single.delta > 0:  # how much of the lead the second stage of training alone explains (point estimates)
        given = 100 * (single.delta - control.delta)
        if control.delta <= 0:
            remains = (f"none remains against the control ({100 * control.delta:+.1f}): all of it is what a second "
                       "stage of training gives a single-task model")
        elif given > 0:
            remains = (f"{100 * control.delta:+.1f} points ({control.delta / single.delta:.0%}) remain against the "
                       f"control, and the other {given:.1f} are what a second stage of training gives a single-task "
                       "model")
        else:
            remains = "all of it remains against the control, which does no better than arm 1"
        sentences.append(f"Of arm 3's lead over arm 1 on the average ({100 * single.delta:+.1f} points), {remains} "
                         "(the control has arm 3's passes over each task and its two learning-rate schedules).")
    if not_learnt:
        sentences.append(f"At this budget arm 1 did not clear its floor on {', '.join(not_learnt)} (the probe found no "
                         "budget at which it did, and this one was accepted): a Δ on those tasks, and an average over "
                         "them, measures a baseline that failed and cannot carry the claim.")
    seeds = len(plan.seeds)
    sizes = ", ".join(f"{task} {size}" for task, size in dev_sizes.items() if task in tasks)
    sentences.append(
        f"The intervals resample the dev examples and the {seeds} seed{'s' if seeds > 1 else ''} (with one seed, dev "
        "examples only), so they measure how far these dev sets and seeds pin the Δs down, nothing more: the dev sets "
        f"are small ({sizes} examples), one budget and one encoder were tried, and the encoder is a 6-layer MiniLM "
        "tuned for sentence embeddings, not BERT-large. Stage 2 here has no MNLI, QQP or QNLI, the paper's largest "
        "tasks (MNLI is close to RTE, where the paper's gain was largest), so a small or null Δ here is no evidence "
        "against the paper's claim with those tasks, and a clear one shows only what these five small tasks give "
        "each other. The paper gives no intervals: its Δs compare with ours in sign, not in size.")
    return " ".join(sentences)
