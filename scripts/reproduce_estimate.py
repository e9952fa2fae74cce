"""What the reproduction costs before it runs (`python -m scripts.reproduce --estimate`): the real training tokens
of every job at each candidate budget, what is finished already, and the hours left at the rate of the finished
single-task jobs. The full plan takes hours on a CPU; this says how many, from the data and this machine's speed."""

from __future__ import annotations

from mtdnn.config import DataSettings
from mtdnn.data import load_task_data
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import resolve_tasks
from scripts.plan import task_name
from scripts.reproduce_plan import ReproducePlan
from scripts.results import ResultStore


def task_tokens(plan: ReproducePlan, entries: dict) -> dict[str, int]:
    """Real (unpadded) tokens of one epoch of each task's training set, as the plan tokenises it."""
    tokenizer = load_tokenizer(plan.model)
    settings = DataSettings(max_seq_length=plan.max_seq_length)
    return {name: int(load_task_data(task, "train", tokenizer, settings).lengths().sum())
            for name, task in resolve_tasks(list(entries.values())).items()}


def job_tokens(plan: ReproducePlan, tokens: dict[str, int]) -> dict[tuple, int]:
    """(arm, task, seed) -> training tokens at `plan`'s budget: arm 1 and the control per task, and the chain per
    seed (stage 2 on all but the separate tasks, then stage 3 of every task); task None for the chain."""
    jobs = {}
    for seed in plan.seeds:
        for name, count in tokens.items():
            jobs[("single", name, seed)] = jobs[("control", name, seed)] = plan.epochs * count
        stage2 = sum(count for name, count in tokens.items() if name not in plan.separate)
        jobs[("chain", None, seed)] = plan.epochs * (stage2 + sum(tokens.values()))
    return jobs


def done(store: ResultStore, plan: ReproducePlan, job: tuple) -> dict | None:
    """The stored row of a finished single or control job; for a chain, its last stage-3 row."""
    arm, name, seed = job
    if arm != "chain":
        return store.load(plan.budget_label, arm, name, f"seed-{seed}")
    rows = [store.load(plan.budget_label, "finetuned", task_name(entry), f"seed-{seed}") for entry in plan.tasks]
    return rows[-1] if all(rows) else None


def estimate(plan: ReproducePlan, entries: dict, store: ResultStore, workers: int) -> list[str]:
    """The estimate's lines: per candidate budget, its tokens by arm and what is left; then the hours left at the
    rate (tokens per second per worker, as those jobs ran: see their `threads` and `side_by_side`) of the finished
    single-task and control jobs, if any. A seed whose stage 2 is done but not all its stage 3 counts as left."""
    tokens = task_tokens(plan, entries)
    lines = [f"training tokens per epoch: {', '.join(f'{name} {count:,}' for name, count in tokens.items())}"]
    measured, seconds, left = 0, 0.0, {}
    for index, budget in enumerate(plan.budgets, 1):
        at = plan.at(budget)
        jobs = job_tokens(at, tokens)
        by_arm = {arm: sum(count for job, count in jobs.items() if job[0] == arm) for arm in ("single", "control",
                                                                                              "chain")}
        finished = {job: row for job, row in ((job, done(store, at, job)) for job in jobs) if row is not None}
        left[index] = sum(count for job, count in jobs.items() if job not in finished)
        for job, row in finished.items():
            if job[0] != "chain" and row.get("seconds"):
                measured, seconds = measured + jobs[job], seconds + row["seconds"]
        lines.append(f"candidate {index} ({at.epochs} epochs, lr {at.learning_rate:g}): "
                     f"{sum(jobs.values()) / 1e6:.1f}M tokens (arm 1 {by_arm['single'] / 1e6:.1f}M, control "
                     f"{by_arm['control'] / 1e6:.1f}M, stages 2 + 3 {by_arm['chain'] / 1e6:.1f}M); {len(finished)} of "
                     f"{len(jobs)} jobs finished, {left[index] / 1e6:.1f}M tokens left")
    if not seconds:
        lines.append("no finished single-task job here to measure this machine's rate on: run the probe first")
        return lines
    rate = measured / seconds
    hours = "; ".join(f"{index}: {tokens_left / rate / workers / 3600:.1f} h" for index, tokens_left in left.items())
    lines.append(f"rate of the finished single-task jobs: {rate:,.0f} tokens/s per worker; time left with {workers} "
                 f"worker(s) if the run trains at candidate N, N: {hours} (evaluations and the probe's other "
                 "candidates besides)")
    return lines
