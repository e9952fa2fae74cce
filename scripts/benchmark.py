"""Speed benchmark (issue 4): mtdnn multi-task training and evaluation against `transformers.Trainer`.

One run measures the machine's fp32 matmul peak, then runs each contender in its own process
(scripts.bench_contenders) so that its peak resident memory is its own, on real GLUE data with
MiniLM, batch 32, max length 128, fp32. Training rates are steady state: steps before `--skip` (mtdnn)
or each Trainer run's first step are excluded. Prints a table and writes JSON.

    python -m scripts.benchmark                 # the full run (`make bench`; its time: docs/performance.md)
    python -m scripts.benchmark --quick         # a smoke run: fewer steps, dev subsets, no 3a
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mtdnn.config import DEFAULT_MODEL
from mtdnn.metrics import task_score
from scripts.machine import machine

TASKS = ["sst2", "cola", "mrpc", "stsb", "rte"]
CONTENDERS = {
    "mtdnn": "mtdnn (train(), multi-task)",
    "trainer_best": "Trainer best (3b)",
    "trainer_run_glue": "Trainer run_glue (3a)",
    "mtdnn_compile": "mtdnn + torch.compile",
}
DEFAULT_CONTENDERS = ["mtdnn", "trainer_best", "trainer_run_glue"]


def peak_gflops(size: int, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a large square matmul on all threads (the MFU denominator)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def layer_parameters() -> int:
    """Parameters of the transformer layers: the 'non-embedding' N of 6*N*tokens (pooler and heads act per
    sequence, not per token, so they are left out too)."""
    from transformers import AutoConfig, AutoModel

    from mtdnn.pretrained import resolve

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(resolve(DEFAULT_MODEL)))
    return sum(p.numel() for p in encoder.encoder.parameters())


def run_trainer_per_task(name: str, args, counts: dict[str, int], out_dir: Path) -> dict:
    """One process per task, as run_glue.py is run: each process's memory is one task's, as a user's would be."""
    parts = [run_contender(name, args, {task: steps}, out_dir, f"{name}-{task}")
             for task, steps in counts.items() if steps > 0]
    merged = {"contender": name, "peak_rss_mb": max(part["peak_rss_mb"] for part in parts),
              "load_average": [parts[0]["load_average"][0], parts[-1]["load_average"][1]]}
    for key in ("train_all_seconds", "process_seconds"):
        merged[key] = sum(part[key] for part in parts)
    for key in ("train_per_task", "eval_per_task", "dev_metrics"):
        if all(key in part for part in parts):
            merged[key] = {task: value for part in parts for task, value in part[key].items()}
    merged["train"] = {key: sum(part["train"][key] for part in parts if part["train"])
                       for key in ("steps", "seconds", "examples", "real_tokens", "padded_tokens")}
    return merged


def run_contender(name: str, args, counts: dict[str, int], out_dir: Path, label: str | None = None) -> dict:
    label = label or name
    output, log = out_dir / f"{label}.json", out_dir / f"{label}.log"
    command = [sys.executable, "-m", "scripts.bench_contenders", name, "--task-steps", json.dumps(counts),
               "--steps", str(args.steps), "--skip", str(args.skip), "--eval-batch-size", str(args.eval_batch_size),
               "--eval-repeats", str(args.eval_repeats), "--output", str(output)]
    # run_glue (3a) trains the same model as 3b, only slower: its training speed is what is of interest
    eval_samples = 0 if name == "trainer_run_glue" else args.eval_samples
    if eval_samples is not None:
        command += ["--eval-samples", str(eval_samples)]
    if args.max_train_samples is not None:
        command += ["--max-train-samples", str(args.max_train_samples)]
    start, load = time.perf_counter(), os.getloadavg()[0]
    with open(log, "w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        sys.exit(f"contender {name} failed (exit {finished.returncode}); see {log}")
    result = json.loads(output.read_text())
    result.update(process_seconds=time.perf_counter() - start, load_average=[round(load, 2), round(os.getloadavg()[0], 2)])
    return result


def rates(part: dict, flops_per_token: float, peak: float) -> dict:
    seconds = part["seconds"]
    return {"examples_per_s": part["examples"] / seconds, "real_tokens_per_s": part["real_tokens"] / seconds,
            "useful_mfu": flops_per_token * part["real_tokens"] / seconds / (peak * 1e9),
            "padding_fraction": 1 - part["real_tokens"] / part["padded_tokens"]}


def median_step_seconds(per_task: dict[str, dict]) -> float:
    """The window's time if every step of a task took that task's median step time: robust to the
    seconds-long stalls that other processes on a shared machine cause."""
    return sum(part["steps"] * statistics.median(part["step_seconds"]) for part in per_task.values())


def summarise(results: dict, parameters: int, peak: float) -> None:
    """Rates of every contender, and their ratios to the Trainer's best (3b)."""
    evaluated = [r["eval_per_task"] for r in results.values() if "eval_per_task" in r]
    common = [task for task in evaluated[0] if all(task in e for e in evaluated)] if evaluated else []
    for result in results.values():
        train = result["train"]
        result["train_rates"] = rates(train, 6 * parameters, peak)
        result["train_rates"]["examples_per_s_median_steps"] = (
            train["examples"] / median_step_seconds(result["train_per_task"]))
        if "eval_per_task" in result:  # the dev sets every evaluated contender ran (a Trainer skips 0-step tasks)
            parts = [result["eval_per_task"][task] for task in common]
            result["eval"] = {key: sum(part[key] for part in parts) for key in parts[0]} | {"tasks": common}
            result["eval_rates"] = rates(result["eval"], 2 * parameters, peak)
    reference = results.get("trainer_best")
    if reference is None:
        return
    for result in results.values():
        result["train_vs_3b"] = {key: result["train_rates"][key] / reference["train_rates"][key]
                                 for key in ("examples_per_s", "real_tokens_per_s", "examples_per_s_median_steps")}
        if "eval_rates" in result and "eval_rates" in reference:
            result["eval_vs_predict"] = {key: result["eval_rates"][key] / reference["eval_rates"][key]
                                         for key in ("examples_per_s", "real_tokens_per_s")}


def dev_score(metrics: dict, tasks) -> float:
    """Mean over `tasks` of each task's score."""
    return sum(task_score(metrics[t]) for t in tasks) / len(tasks)


def print_table(report: dict) -> None:
    m, results = report["machine"], report["results"]
    ratio = lambda result, group, key: f"{result[group][key]:.2f}x" if group in result else "-"  # noqa: E731
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"transformers {m['transformers']}")
    print(f"peak fp32 matmul: {report['peak_gflops']:.1f} GFLOP/s (start {report['peak_gflops_start']:.1f}, "
          f"end {report['peak_gflops_end']:.1f}); N = {report['parameters'] / 1e6:.2f}M transformer-layer parameters; "
          f"useful MFU = 6N (training) or 2N (evaluation) x real tokens/s / peak")
    print(f"\ntraining: {report['steps']} optimizer steps each, per task {report['task_steps']}; timed: mtdnn steps "
          f"{report['skip']}..{report['steps'] - 1}, each Trainer run's steps after its first; 'median': ex/s "
          f"with every step at its task's median step time; 'wall s': training with its start-up (loading, tokenising)")
    header = (f"{'contender':28} {'ex/s':>6} {'tok/s':>6} {'pad':>4} {'MFU':>4} | {'ex/s':>6} {'tok/s':>6} "
              f"{'median':>6} | {'wall s':>6} {'RSS MB':>6} {'load':>9}")
    print(f"{'':28} {'':23} | {'ratio to 3b':^20} |\n{header}\n{'-' * len(header)}")
    for name, result in results.items():
        train = result["train_rates"]
        load = "{:.1f}->{:.1f}".format(*result["load_average"])
        print(f"{CONTENDERS[name]:28} {train['examples_per_s']:6.1f} {train['real_tokens_per_s']:6.0f} "
              f"{train['padding_fraction']:4.0%} {train['useful_mfu']:4.0%} | {ratio(result, 'train_vs_3b', 'examples_per_s'):>6} "
              f"{ratio(result, 'train_vs_3b', 'real_tokens_per_s'):>6} "
              f"{ratio(result, 'train_vs_3b', 'examples_per_s_median_steps'):>6} | "
              f"{result['train_all_seconds']:6.0f} {result['peak_rss_mb']:6.0f} {load:>9}")
    evaluated = [(name, result) for name, result in results.items() if "eval" in result]
    if evaluated:
        ev = evaluated[0][1]["eval"]
        print(f"\nevaluation: dev sets of {', '.join(ev['tasks'])} ({ev['examples']} examples), batch "
              f"{report['eval_batch_size']}, best of {report['eval_repeats']} runs; mtdnn task_logits vs Trainer.predict")
        header = f"{'contender':28} {'ex/s':>6} {'tok/s':>6} {'pad':>4} {'MFU':>4} | {'ex/s':>6} {'tok/s':>6}"
        print(f"{'':28} {'':23} | {'ratio to 3b':^13}\n{header}\n{'-' * len(header)}")
        for name, result in evaluated:
            rates_ = result["eval_rates"]
            print(f"{CONTENDERS[name]:28} {rates_['examples_per_s']:6.1f} {rates_['real_tokens_per_s']:6.0f} "
                  f"{rates_['padding_fraction']:4.0%} {rates_['useful_mfu']:4.0%} | "
                  f"{ratio(result, 'eval_vs_predict', 'examples_per_s'):>6} {ratio(result, 'eval_vs_predict', 'real_tokens_per_s'):>6}")
    scored = [r for r in results.values() if r.get("dev_metrics")]
    if scored:
        common = [t for t in scored[0]["dev_metrics"] if all(t in r["dev_metrics"] for r in scored)]
        print(f"\ndev metrics after the same steps (score: mean over {', '.join(common)}):")
        for name, result in results.items():
            if result.get("dev_metrics"):
                shown = ", ".join(f"{task} " + "/".join(f"{v:.3f}" for v in metrics.values())
                                  for task, metrics in result["dev_metrics"].items())
                print(f"  {CONTENDERS[name]:26} score {dev_score(result['dev_metrics'], common):.3f}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per contender (default 100; quick 24)")
    parser.add_argument("--skip", type=int, default=None, help="mtdnn steps excluded from timing (default 20; quick 6)")
    parser.add_argument("--eval-samples", type=int, default=None, help="dev examples per task (default all; quick 200)")
    parser.add_argument("--max-train-samples", type=int, default=None, help="train examples per task (default all)")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="evaluation batch of both mtdnn and Trainer.predict (default: mtdnn's train.eval_batch_size)")
    parser.add_argument("--eval-repeats", type=int, default=2, help="evaluation is timed as the best of this many runs")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=None,
                        help="mtdnn first (default: mtdnn, trainer_best, trainer_run_glue; --quick leaves out "
                             "trainer_run_glue, whose 128-token steps take most of a run); mtdnn_compile is opt-in: "
                             "compiling takes minutes on 2 cores")
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 steps, 200 dev examples per task, no 3a")
    parser.add_argument("--output", default="runs/bench/benchmark.json")
    args = parser.parse_args()
    args.steps = args.steps or (24 if args.quick else 100)
    args.skip = args.skip if args.skip is not None else (6 if args.quick else 20)
    if args.quick and args.eval_samples is None:
        args.eval_samples = 200
    args.contenders = args.contenders or DEFAULT_CONTENDERS[: 2 if args.quick else 3]
    if args.eval_batch_size is None:
        from mtdnn.config import TrainSettings

        args.eval_batch_size = TrainSettings().eval_batch_size
    if not 1 <= args.skip < args.steps:
        parser.error("--skip must be at least 1 and below --steps")
    if args.contenders[0] != "mtdnn":
        parser.error("--contenders must start with mtdnn: its schedule sets each task's steps for the Trainer")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_path = Path(args.output)
    out_dir = out_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)

    report = {"command": " ".join(["python -m scripts.benchmark", *sys.argv[1:]]), "machine": machine(),
              "load_average_start": [round(x, 2) for x in os.getloadavg()], "steps": args.steps, "skip": args.skip,
              "batch_size": 32, "max_length": 128, "precision": "fp32", "eval_samples_per_task": args.eval_samples,
              "eval_batch_size": args.eval_batch_size, "eval_repeats": args.eval_repeats,
              "peak_gflops_start": peak_gflops(2048 if args.quick else 4096)}
    report["parameters"] = layer_parameters()
    report["results"] = {}
    counts = dict.fromkeys(TASKS, args.steps)  # mtdnn reads only the task names; it reports its own split
    for name in args.contenders:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        run = run_trainer_per_task if name.startswith("trainer") else run_contender
        report["results"][name] = run(name, args, counts, out_dir)
        counts = report["task_steps"] = report["results"]["mtdnn"]["task_steps"]
    report["peak_gflops_end"] = peak_gflops(2048 if args.quick else 4096)
    report["peak_gflops"] = max(report["peak_gflops_start"], report["peak_gflops_end"])
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summarise(report["results"], report["parameters"], report["peak_gflops"])
    print_table(report)
    busiest = max(load for result in report["results"].values() for load in result["load_average"])
    if busiest > report["machine"]["cores"]:
        print(f"\nWARNING: the load average reached {busiest:.1f} on {report['machine']['cores']} cores: other "
              "processes shared the CPU and these timings are not to be trusted; run again on a quiet machine.")
    out_path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
