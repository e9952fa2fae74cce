"""What each way of fitting a bigger encoder into less memory saves and costs (issue 19, part 3): MiniLM on the
quickstart's tasks, every variant trained for one epoch on the same capped data, each run in a process of its own.

    python -m scripts.bench_memory                      # every variant, 1,000 training examples per task
    python -m scripts.bench_memory --cap 100 --variants baseline,lora   # a smoke run

Each variant trains twice, one run per measure:
- time: CPU time of the training loop per optimizer update (its final evaluation and checkpoint left out), and the
  dev metrics at the end. One thread per run (`--threads`), as the experiment scripts run their jobs: its CPU time
  then hardly depends on what else the machine runs.
- memory: the peak resident set of the process (the kernel's `ru_maxrss`: weights, gradients, optimizer state,
  activations, the Python heap and libraries), with glibc told to return every freed block of 128 KiB or more to
  the system (MALLOC_MMAP_THRESHOLD_). By default glibc keeps freed tensors' memory for reuse, and the peak then
  follows its heap's history more than the live tensors (the default allocator's peak is in bench.json too). Its
  dev evaluation is cut to one batch per task; the learning rate does not change memory, so `lora-lr` has none.
The tokenised data is cached before the first run. Prints a markdown table; each run's figures are in
OUTPUT_DIR/<variant>/<measure>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: the weights are local

import torch  # noqa: E402

from mtdnn import training  # noqa: E402
from mtdnn.adapters import prepare_encoders, trainable_parameters  # noqa: E402
from mtdnn.config import load_config  # noqa: E402
from mtdnn.data import load_task_data  # noqa: E402
from mtdnn.model import MTDNNModel  # noqa: E402
from mtdnn.pretrained import load_tokenizer  # noqa: E402
from mtdnn.tasks import resolve_tasks  # noqa: E402
from scripts.machine import machine_line  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
VARIANTS = {  # name -> (row label, --set overrides of the quickstart config, the variant whose memory it has)
    "baseline": ("baseline (every weight trains)", [], "baseline"),
    "checkpointing": ("gradient checkpointing", ["model.gradient_checkpointing=true"], "checkpointing"),
    "frozen": ("freeze embeddings + first 3 of 6 layers", ["model.freeze_embeddings=true", "model.freeze_layers=3"],
               "frozen"),
    "lora": ("LoRA r=8 (query, value)", ["model.lora.r=8"], "lora"),
    "lora-lr": ("LoRA r=8, learning rate 1e-3", ["model.lora.r=8", "train.learning_rate=1.0e-3"], "lora"),
}
MEASURES = {  # measure -> (its overrides, the environment its process starts with)
    "time": ([], {}),
    "memory": (["data.max_eval_samples=32"], {"MALLOC_MMAP_THRESHOLD_": "131072"}),
}
MAIN_METRICS = {"cola": ("matthews_correlation",), "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"),
                "stsb": ("pearson", "spearmanr")}


def overrides(cap: int, output_dir: Path) -> list[str]:
    """What every run changes in the quickstart: capped training sets, one epoch, and evaluation batches no larger
    than training's (the training step sets the peak)."""
    return [f"data.max_train_samples={cap}", "train.epochs=1", "train.eval_batch_size=32", f"output_dir={output_dir}"]


@contextmanager
def clock(spent: dict, key: str):
    """Add the wall and CPU seconds (all of this process's threads) of the block to spent[key]."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        before = spent.get(key, (0.0, 0.0))
        spent[key] = (before[0] + time.perf_counter() - wall, before[1] + time.process_time() - cpu)


def time_the_loop(spent: dict) -> None:
    """Time the loop that `train` runs, and apart the end of its epoch (the dev evaluation and checkpoint)."""
    loop, after_epoch = training.run_loop, training.MultiTaskStage.after_epoch

    def timed_loop(*args, **kwargs):
        with clock(spent, "loop"):
            return loop(*args, **kwargs)

    def timed_after_epoch(self, *args, **kwargs):
        with clock(spent, "after_epoch"):
            return after_epoch(self, *args, **kwargs)

    training.run_loop, training.MultiTaskStage.after_epoch = timed_loop, timed_after_epoch


def run_variant(name: str, measure: str, cap: int, output_dir: Path) -> dict:
    """Train one variant in this process; its peak memory, time per update and dev metrics."""
    config = load_config(QUICKSTART, [*VARIANTS[name][1], *MEASURES[measure][0], *overrides(cap, output_dir)])
    spent = {}
    time_the_loop(spent)
    state = json.loads((training.train(config, overwrite=True) / "last" / "trainer_state.json").read_text())
    wall, cpu = (spent["loop"][i] - spent["after_epoch"][i] for i in (0, 1))
    updates = state["step"]
    return {"variant": name, "measure": measure, "environment": MEASURES[measure][1],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "updates": updates,
            "cpu_seconds_per_update": cpu / updates, "wall_seconds_per_update": wall / updates,
            "threads": torch.get_num_threads(), "score": state["dev_score"], "metrics": state["dev_metrics"]}


def prepare(cap: int, output_dir: Path, names: list[str]) -> tuple[int, dict[str, tuple[int, int]]]:
    """Tokenise (cache) every split the runs read; the training examples per epoch, and each variant's
    (trainable, all) parameters."""
    config = load_config(QUICKSTART, overrides(cap, output_dir))
    tokenizer = load_tokenizer(config.model.name_or_path)
    tasks = resolve_tasks(config.tasks)
    examples = sum(len(load_task_data(task, "train", tokenizer, config.data, config.data.train_cap(name)))
                   for name, task in tasks.items())
    for task in tasks.values():
        load_task_data(task, "dev", tokenizer, config.data, config.data.max_eval_samples)
    parameters = {}
    for name in names:
        settings = load_config(QUICKSTART, VARIANTS[name][1]).model
        model = MTDNNModel.from_encoder(settings.name_or_path, tasks)
        parameters[name] = trainable_parameters(prepare_encoders(model, settings))
    return examples, parameters


def run_child(name: str, measure: str, args) -> dict:
    """One run in a process of its own (its peak memory is its own), its log beside its figures."""
    output_dir = args.output_dir / name
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / f"{measure}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "scripts.bench_memory", "--child", name, "--measure", measure,
                        "--cap", str(args.cap), "--threads", str(args.threads), "--output-dir", str(args.output_dir)],
                       stdout=log, stderr=subprocess.STDOUT, check=True, env={**os.environ, **MEASURES[measure][1]})
    print(f"{name} ({measure}): done", file=sys.stderr)
    return json.loads((output_dir / f"{measure}.json").read_text())


def cell(metrics: dict, task: str) -> str:
    return " / ".join(f"{metrics[task][metric]:.3f}" for metric in MAIN_METRICS[task]) if task in metrics else "-"


def table(timed: dict[str, dict], memory: dict[str, float], parameters: dict[str, tuple[int, int]]) -> str:
    """One row per variant: peak memory and CPU time per update, each also against the baseline's (or the first
    variant's), trainable parameters and the dev metrics."""
    first = "baseline" if "baseline" in timed else next(iter(timed))
    lines = ["| variant | peak RSS | vs baseline | trainable parameters | CPU time per update | vs baseline "
             "| dev score | CoLA MCC | SST-2 acc | MRPC acc / F1 | STS-B Pearson / Spearman |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in timed.items():
        trainable, total = parameters[name]
        peak, seconds = memory[VARIANTS[name][2]], result["cpu_seconds_per_update"]
        lines.append(
            f"| {VARIANTS[name][0]} | {peak:,.0f} MiB | {peak - memory[VARIANTS[first][2]]:+,.0f} MiB "
            f"| {trainable:,} ({trainable / total:.1%}) | {seconds * 1000:,.0f} ms "
            f"| {seconds / timed[first]['cpu_seconds_per_update'] - 1:+.0%} | {result['score']:.3f} | "
            + " | ".join(cell(result["metrics"], task) for task in MAIN_METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap", type=int, default=1000, help="training examples kept per task (default 1000)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench_memory"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run, in its own process
    parser.add_argument("--measure", choices=MEASURES, default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        result = run_variant(args.child, args.measure, args.cap, args.output_dir / args.child / args.measure)
        (args.output_dir / args.child / f"{args.measure}.json").write_text(json.dumps(result, indent=2))
        return
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]}; choose from {', '.join(VARIANTS)}")
    examples, parameters = prepare(args.cap, args.output_dir, names)
    timed = {name: run_child(name, "time", args) for name in names}
    memory = {name: run_child(name, "memory", args)["peak_rss_mib"] for name in dict.fromkeys(
        VARIANTS[name][2] for name in names)}
    print(f"MiniLM (all-MiniLM-L6-v2), tasks cola, sst2, mrpc, stsb: {args.cap:,} training examples each "
          f"({examples:,} in all), 1 epoch of {timed[names[0]]['updates']} updates, batch 32, seed 42, complete dev "
          f"sets; {args.threads} torch thread(s) per run.")
    print(f"Machine: {machine_line()}\n")
    print(table(timed, memory, parameters))


if __name__ == "__main__":
    main()
