"""Reproduction of MT-DNN's central claim (issues 6 and 20) on the GLUE data here, with the MiniLM encoder.

Arms, each with the same hyper-parameters: (1) single-task fine-tuning, (control) arm 1's model fine-tuned again on
its task as arm 3's stage 3 is, so with as many passes over it, (2) MT-DNN stage 2 (multi-task, WNLI left out as
in the paper) alone, (3) stage 2 then stage 3 (per-task fine-tuning; WNLI with a new head). First a budget probe
picks, from the plan's candidates, the cheapest budget at which arm 1 learns every task on every seed; its arm-1
runs are arm 1. Every result is one JSON file under the output directory: a re-run skips finished jobs and
resumes interrupted training from its last checkpoint. Writes its section of docs/results.md and two plots.

    python -m scripts.reproduce                     # the full run (`make reproduce`)
    python -m scripts.reproduce --accept-budget 2   # no candidate passed: go on with the second anyway
    python -m scripts.reproduce --quick             # a smoke run: 64 examples per task, one seed
    python -m scripts.reproduce --estimate          # tokens per candidate budget, time left at this machine's rate
    python -m scripts.reproduce --report-only
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import sys
from pathlib import Path

from mtdnn.config import DataSettings
from mtdnn.tasks import resolve_tasks
from mtdnn.token_cache import cache_root
from scripts import jobs
from scripts.plan import claim_output_dir, described, task_name
from scripts.predictions import load_labels
from scripts.report import driver_command
from scripts.reproduce_budget import BudgetRefused, candidate, choose, judge, majority_floor
from scripts.reproduce_estimate import estimate
from scripts.reproduce_plan import FULL, QUICK, QUICK_ACCEPTS, ReproducePlan
from scripts.reproduce_report import write_report
from scripts.reproduce_runs import run_chain, run_control, run_single, run_trainer
from scripts.results import ResultStore, run_or_load
from scripts.subsets import write_subset

logger = logging.getLogger("reproduce")


def task_entries(plan: ReproducePlan, directory: Path) -> dict[str, str | dict]:
    """Each task's config entry: as in the plan, or a mapping pointing at a random training subset."""
    entries = {}
    for entry in plan.tasks:
        name = task_name(entry)
        cap = plan.train_caps.get(name)
        entries[name] = write_subset(entry, cap, plan.subset_seed, directory) if cap else entry
    return entries


def run_job(plan: ReproducePlan, entries: dict, output_dir: Path, job: tuple) -> dict | None:
    """One unit of work at `plan`'s budget: ("chain", seed) for arms 2 and 3, or (arm, task, seed) for arm 1
    ("single"), the control, or arm 1' ("trainer"); the result row of the last three."""
    if job[0] == "chain":
        return run_chain(plan, entries, job[1], output_dir)
    arm, name, seed = job
    if arm == "control":
        return run_control(plan, name, seed, output_dir)
    run_dir = output_dir / "runs" / plan.budget_label / arm / name / f"seed-{seed}"
    work = (lambda: run_single(plan, entries[name], seed, run_dir, output_dir / "dev_labels")) if arm == "single" \
        else (lambda: run_trainer(plan, entries[name], seed, run_dir))
    return ResultStore(output_dir / "results").run_once((plan.budget_label, arm, name, f"seed-{seed}"), work,
                                                        arm=arm, task=name, seed=seed, budget=plan.budget_label)


def probe_order(plan: ReproducePlan) -> list[str]:
    names = [task_name(entry) for entry in plan.tasks]
    return [name for name in plan.probe_first if name in names] + [n for n in names if n not in plan.probe_first]


def probe_candidate(plan: ReproducePlan, entries: dict, output_dir: Path, pool, workers: int,
                    fail_fast: bool = True) -> list[dict]:
    """Arm 1 at `plan`'s budget, task by task (`probe_order`) and seed by seed, each run judged as it ends; with
    `fail_fast`, no run starts once one has missed (runs in flight on other workers finish, and are stored)."""
    specs = resolve_tasks(list(entries.values()))
    verdicts, in_flight = [], {}

    def settle(wait: str | None) -> None:
        if wait and in_flight:
            concurrent.futures.wait(in_flight, return_when=wait)
        for future in [future for future in in_flight if future.done()]:
            name, seed = in_flight.pop(future)
            row = pool.result(future)
            floor = majority_floor(specs[name], load_labels(output_dir / "dev_labels")[name])
            verdicts.append(judge(plan, name, seed, row["metrics"], floor))

    for name in probe_order(plan):
        for seed in plan.seeds:
            settle(concurrent.futures.FIRST_COMPLETED if len(in_flight) >= workers else None)
            if fail_fast and not all(verdict["passed"] for verdict in verdicts):
                break
            in_flight[pool.submit(run_job, plan, entries, output_dir, ("single", name, seed))] = (name, seed)
    settle(concurrent.futures.ALL_COMPLETED)
    order = probe_order(plan)
    return sorted(verdicts, key=lambda verdict: (order.index(verdict["task"]), verdict["seed"]))


def probe(plan: ReproducePlan, entries: dict, output_dir: Path, pool, workers: int,
          accept: int | None) -> ReproducePlan:
    """The budget every arm trains at: the first candidate at which arm 1 learns every task on every seed, else
    candidate `accept` (its arm 1 completed), else BudgetRefused. The evidence goes to `budget.json`."""
    records = []
    for index, budget in enumerate(plan.budgets, 1):
        records.append(candidate(index, plan.at(budget), probe_candidate(plan.at(budget), entries, output_dir, pool,
                                                                         workers)))
        if records[-1]["passed"]:
            break
    try:
        choice = choose(records, accept)
    finally:
        (output_dir / "budget.json").write_text(json.dumps({"candidates": records}, indent=2))
    chosen = plan.at(plan.budgets[choice["chosen"] - 1])
    if choice["accepted"]:  # every task and seed of it, judged, though some miss
        records[choice["chosen"] - 1] = candidate(choice["chosen"], chosen, probe_candidate(
            chosen, entries, output_dir, pool, workers, fail_fast=False))
    (output_dir / "budget.json").write_text(json.dumps({**choice, "candidates": records}, indent=2))
    for other in {plan.at(budget).budget_label for budget in plan.budgets} - {chosen.budget_label}:
        for run_dir in (output_dir / "runs" / other / "single").glob("*/seed-*"):
            jobs.remove_checkpoints(run_dir)  # kept until now: an accepted candidate's control continues from them
    return chosen


def run_all(plan: ReproducePlan, output_dir: Path, workers: int = 1, accept: int | None = None) -> ResultStore:
    """The probe, then every job not finished yet at the chosen budget, `workers` at a time; a job that fails stops
    the run once the jobs in flight end, and every finished job's result stays stored."""
    entries = task_entries(plan, output_dir / "data")  # written once here, before any worker reads them
    with jobs.job_pool(workers) as pool:
        chosen = probe(plan, entries, output_dir, pool, workers, accept)
        # the longest first: stage 2 and its fine-tuning; each control then frees its arm-1 checkpoint
        for job in [("chain", seed) for seed in plan.seeds] + [("control", name, seed) for seed in plan.seeds
                                                                for name in entries]:
            pool.submit(run_job, chosen, entries, output_dir, job)
    return ResultStore(output_dir / "results")


def claim(output_dir: Path, plan: ReproducePlan) -> None:
    """`claim_output_dir`, where a plan whose candidate budgets extend the stored plan's is the same experiment
    (results are kept per budget): a budget can be added after the probe rejected every one."""
    stored_file = output_dir / "plan.json"
    if stored_file.is_file():
        stored, wanted = json.loads(stored_file.read_text()), described(plan)
        if ({**stored, "budgets": None} == {**wanted, "budgets": None}
                and wanted["budgets"][:len(stored.get("budgets") or [])] == stored.get("budgets")):
            stored_file.write_text(json.dumps(wanted, indent=2))
    claim_output_dir(output_dir, plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs.add_run_arguments(parser, "reproduce", quick="64 training examples per task, one seed; the budget probe "
                           f"rejects every candidate, and the run goes on with candidate {QUICK_ACCEPTS}")
    parser.add_argument("--accept-budget", type=int, default=None, metavar="N",
                        help="when no candidate budget passes the probe, go on with candidate N (1-based) anyway")
    parser.add_argument("--estimate", action="store_true",
                        help="print each candidate budget's training tokens, the jobs finished in the output "
                        "directory and the time left at the rate of its finished single-task jobs; train nothing")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR",
                        help="the output directory of a re-run of the same plan: the report compares the two")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = QUICK if args.quick else FULL
    accept = args.accept_budget if args.accept_budget is not None else (QUICK_ACCEPTS if args.quick else None)
    if accept is not None and not 1 <= accept <= len(plan.budgets):
        parser.error(f"--accept-budget {accept}: the plan has candidates 1 to {len(plan.budgets)}")
    output_dir = args.output_dir or Path("runs/reproduce" + ("-quick" if args.quick else ""))
    workers = args.workers or jobs.default_workers()
    if args.estimate:  # reads the output directory, writes nothing there
        if args.report_only or args.compare or args.accept_budget is not None:
            parser.error("--estimate trains nothing and writes no report: use it alone (with --output-dir, --quick)")
        stored = output_dir / "plan.json"
        if stored.is_file() and json.loads(stored.read_text()) != described(plan):
            parser.error(f"--estimate: {output_dir} holds results of a different plan ({stored})")
        # the run's own training subsets, else the same files beside the token cache (tokenised once for both)
        subsets = output_dir / "data" if stored.is_file() else cache_root(DataSettings()) / "reproduce-subsets"
        print("\n".join(estimate(plan, task_entries(plan, subsets), ResultStore(output_dir / "results"), workers)))
        return
    if args.compare:  # checked before any training: a mistake here should not cost the whole run
        if args.compare.resolve() == output_dir.resolve():
            parser.error(f"--compare {args.compare}: that is this run's own output directory; give the re-run's")
        if not (args.compare / "plan.json").is_file():
            parser.error(f"--compare {args.compare}: no plan.json there (not an output directory of this script)")
        if json.loads((args.compare / "plan.json").read_text()) != described(plan):
            parser.error(f"--compare {args.compare}: its results are of a different plan than this one")
    claim(output_dir, plan)
    try:
        store = run_or_load(output_dir, "reproduce",
                            None if args.report_only else lambda: run_all(plan, output_dir, workers, accept))
    except BudgetRefused as refusal:
        sys.exit(f"{refusal}\nThe evidence: {output_dir / 'budget.json'}.")
    choice_file = output_dir / "budget.json"
    if not choice_file.is_file() or "chosen" not in json.loads(choice_file.read_text()):
        sys.exit(f"{output_dir} has no chosen budget yet (budget.json): run without --report-only first")
    command = driver_command("reproduce", sys.argv[1:])
    print(write_report(plan, store, output_dir, args.report, command, rerun=args.compare))
    print(f"\nwrote {args.report}")


if __name__ == "__main__":
    main()
