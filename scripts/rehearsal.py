"""`make rehearsal`: the paper's config (configs/mtdnn_bert_base_glue.yaml) on all of GLUE at its real size.

MNLI, QQP and QNLI's training sets cannot be downloaded here, so the data is synthetic GLUE of the real shapes
(scripts.glue_shapes). The run, each step a separate process as a user runs it:
1. cold tokenisation of every split (train, dev and every test set), and of RTE alone for comparison;
2. `mtdnn train` with a warm cache for `--steps` updates, then its evaluation of every dev set; RTE alone again;
3. the same training under `accelerate launch --num_processes 2` (CPU processes here);
4. `mtdnn predict --glue-submission --fill-missing`: a complete submission of every test set.
It records times and each process's peak resident memory and writes `results-<label>.json`; `--report` puts
the table of every recorded label (e.g. `before` from `--mtdnn-src` of an older checkout) in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mtdnn.config import DEFAULT_MODEL
from scripts.glue_shapes import ROWS, write_glue

REPO = Path(__file__).resolve().parents[1]

CONFIG = REPO / "configs" / "mtdnn_bert_base_glue.yaml"
REPORT_START, REPORT_END = "<!-- rehearsal:start -->", "<!-- rehearsal:end -->"

TOKENISE = """
import json, resource, sys, time
from mtdnn.config import load_config
from mtdnn.data import load_task_data
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import GLUE_TASKS, resolve_tasks
config = load_config(sys.argv[1], sys.argv[3:])
tokenizer = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
started, held = time.perf_counter(), []  # held, as a training process holds its data
for task in resolve_tasks(config.tasks).values():
    for split in ("train", "dev"):
        if split in (task.data_files or task.splits):
            held.append(load_task_data(task, split, tokenizer, config.data, None))
if sys.argv[2] == "tests":
    for task in GLUE_TASKS.values():
        if task.submission_file and "test" in task.splits:
            held.append(load_task_data(task, "test", tokenizer, config.data, None))
print(json.dumps({"seconds": time.perf_counter() - started, "examples": sum(len(data) for data in held),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_encoder(directory: Path, kind: str) -> Path:
    """A config (random weights: `model.from_scratch`) and MiniLM's uncased BERT tokenizer."""
    from transformers import AutoTokenizer, BertConfig

    from mtdnn.pretrained import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    sizes = {"tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
             "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
             "bert-base": {}}[kind]
    directory.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=tokenizer.vocab_size, **sizes).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def watch(command: list[str], env: dict, output: Path, log: Path | None = None) -> dict:
    """Run `command`, sampling every process of its tree: peak resident memory per process, and when `log`
    (metrics.jsonl) got its first training row and its first evaluation row. Its output goes to `output`.out/.err
    (files, not pipes: a child blocked on a full pipe would wait forever)."""
    started = time.perf_counter()
    with open(f"{output}.out", "w") as stdout, open(f"{output}.err", "w") as stderr:
        child = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, text=True)
        return _sample(child, started, output, log)


def _sample(child: subprocess.Popen, started: float, output: Path, log: Path | None) -> dict:
    peaks, first_step, evaluated, last_train, trained = {}, None, None, None, 0
    while child.poll() is None:
        try:
            tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
            for process in tree:
                if process.name().startswith("python"):
                    peaks[process.pid] = max(peaks.get(process.pid, 0), process.memory_info().rss)
        except psutil.Error:
            pass
        if log is not None and log.is_file():
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            train_rows = [row for row in rows if row["type"] == "train"]
            if train_rows and first_step is None:
                first_step = time.perf_counter() - started
            if len(train_rows) > trained:  # when the newest training row appeared
                trained, last_train = len(train_rows), time.perf_counter() - started
            if any(row["type"] == "eval" for row in rows) and evaluated is None:
                evaluated = time.perf_counter() - started
        time.sleep(0.25)
    if child.returncode != 0:
        raise SystemExit(f"rehearsal: {' '.join(child.args[:4])} ... failed ({child.returncode}), see {output}.err:\n"
                         f"{Path(f'{output}.err').read_text()[-3000:]}")
    return {"seconds": time.perf_counter() - started, "first_step_seconds": first_step, "eval_done": evaluated,
            "last_train": last_train, "peak_rss_mb": [p / 2**20 for p in peaks.values()],
            "stdout": Path(f"{output}.out").read_text()}


def mean_train_tokens(out: Path, encoder: str, max_seq_length: int, sample: int = 2000) -> float:
    """Real (unpadded) tokens per training example of the paper's tasks, weighted by their sizes (proportional
    sampling visits every example once an epoch), from the first `sample` examples of each training set."""
    from transformers import AutoTokenizer

    from mtdnn.sources import load_split
    from mtdnn.tasks import GLUE_TASKS

    tokenizer = AutoTokenizer.from_pretrained(out / f"encoder-{encoder}")
    tokens = examples = 0.0
    for name in ("mnli", "rte", "qqp", "qnli", "mrpc", "sst2", "cola", "stsb"):
        columns = load_split(GLUE_TASKS[name], "train", out / "glue")
        pairs = columns.get("text_b", [None] * len(columns["text_a"]))[:sample]
        encoded = tokenizer(columns["text_a"][:sample], pairs if pairs[0] is not None else None, truncation=True,
                            max_length=max_seq_length)
        tokens += ROWS[name, "train"] * sum(map(len, encoded["input_ids"])) / len(encoded["input_ids"])
        examples += ROWS[name, "train"]
    return tokens / examples


def dev_examples() -> int:
    return sum(rows for (task, split), rows in ROWS.items()
               if split.startswith("dev") and task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"))


def rehearse(args) -> dict:
    out = args.output_dir.resolve()
    glue = out / "glue"
    shapes = write_glue(glue, Path(os.environ.get("GLUE_DIR", REPO.parent / "shared" / "data" / "glue")))
    encoder = write_encoder(out / f"encoder-{args.encoder}", args.encoder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if args.mtdnn_src:
        env["PYTHONPATH"] = str(Path(args.mtdnn_src).resolve())
    cache, run, logs = out / f"cache-{args.label}", out / f"run-{args.label}", out / f"logs-{args.label}"
    logs.mkdir(parents=True, exist_ok=True)
    common = [f"model.name_or_path={encoder}", "model.from_scratch=true", f"data.glue_dir={glue}",
              f"data.max_seq_length={args.max_seq_length}", f"data.cache_dir={cache}", "train.log_every_steps=1",
              f"train.max_steps={args.steps}", f"train.eval_batch_size={args.eval_batch_size}"]
    sets = [item for assignment in common for item in ("--set", assignment)]
    python = [sys.executable]
    result = {"label": args.label, "encoder": args.encoder, "steps": args.steps, "shapes": shapes["rows"]}

    def tokenise(tests: str, tasks: list[str], cache_dir: Path) -> dict:
        extra = [*common[:-1], f"data.cache_dir={cache_dir}", *tasks]
        measured = watch([*python, "-c", TOKENISE, str(CONFIG), tests, *extra], env, logs / f"tokenise-{cache_dir.name}")
        return {**json.loads(measured["stdout"].strip().splitlines()[-1]), "wall": measured["seconds"]}

    print("rehearsal: cold tokenisation of every split", flush=True)
    result["tokenise_all"] = tokenise("tests", [], cache)
    result["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    result["tokenise_rte"] = tokenise("no", ["tasks=[rte]"], out / f"cache-{args.label}-rte")
    print("rehearsal: training with a warm cache", flush=True)
    train = [*python, "-m", "mtdnn", "train", str(CONFIG), *sets, "--set", f"output_dir={run}", "--overwrite"]
    result["train_all"] = {k: v for k, v in watch(train, env, logs / "train", run / "metrics.jsonl").items()
                           if k != "stdout"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result["examples_per_second"] = [row for row in rows if row["type"] == "train"][-1]["examples_per_second"]
    result["mean_train_tokens"] = mean_train_tokens(out, args.encoder, args.max_seq_length)
    result["dev_metrics"] = [row for row in rows if row["type"] == "eval"][-1]["metrics"]
    rte = [*train[:-3], "--set", "tasks=[rte]", "--set", "train.max_steps=20", "--set", f"output_dir={run}-rte",
           "--overwrite"]  # RTE alone: the memory every process has without GLUE's big tasks
    result["train_rte"] = {k: v for k, v in watch(rte, env, logs / "train-rte", Path(f"{run}-rte") / "metrics.jsonl")
                           .items() if k != "stdout"}
    if args.processes > 1:
        print(f"rehearsal: training in {args.processes} processes (accelerate launch)", flush=True)
        launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                  str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "-m", "mtdnn", "train", str(CONFIG), *sets, "--set", "train.max_steps=20",
                  "--set", "data.max_eval_samples=500", "--set", f"output_dir={run}-launch", "--overwrite"]
        measured = watch(launch, {**env, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}, logs / "launch")
        result["launch"] = {k: v for k, v in measured.items() if k != "stdout"}
    print("rehearsal: the GLUE submission", flush=True)
    submission = [*python, "-m", "mtdnn", "predict", str(run / "last"), "--split", "test", "--output-dir",
                  str(out / f"submission-{args.label}"), "--glue-submission", "--fill-missing"]
    measured = watch(submission, env, logs / "submission")
    files = json.loads(measured["stdout"])["files"]
    result["submission"] = {"seconds": measured["seconds"], "peak_rss_mb": measured["peak_rss_mb"],
                            "rows": {entry["file"]: entry["rows"] for entry in files},
                            "status": {entry["file"]: entry["status"] for entry in files}}
    (out / f"results-{args.label}.json").write_text(json.dumps(result, indent=2))
    return result


def table(results: list[dict]) -> list[str]:
    """One column per recorded label: the figures issue 17 asks for."""
    def row(name, value):
        return f"| {name} | " + " | ".join(value(r) for r in results) + " |"

    def peak(part):
        return lambda r: f"{max(r[part]['peak_rss_mb']) / 1024:.2f} GB" if part in r else "-"
    train_eval = lambda r: r["train_all"]["eval_done"] - r["train_all"]["last_train"]  # noqa: E731
    return [
        "| | " + " | ".join(f"{r['label']} ({r['encoder']}, {r['steps']} steps)" for r in results) + " |",
        "|---|" + "---|" * len(results),
        row("cold tokenisation, every split (train, dev, test)", lambda r: f"{r['tokenise_all']['seconds']:.0f} s "
            f"({r['tokenise_all']['examples']:,} examples)"),
        row("peak memory, cold tokenisation of every split", lambda r: f"{r['tokenise_all']['peak_rss_mb'] / 1024:.2f} GB"),
        row("... of RTE alone", lambda r: f"{r['tokenise_rte']['peak_rss_mb'] / 1024:.2f} GB"),
        row("cache on disk", lambda r: f"{r['cache_mb']:.0f} MB"),
        row("`mtdnn train` to the first optimizer step, warm cache", lambda r: f"{r['train_all']['first_step_seconds']:.1f} s"),
        row("peak memory of training, all of GLUE (warm)", peak("train_all")),
        row("... RTE alone (warm)", peak("train_rte")),
        row("peak memory of each of 2 processes (`accelerate launch`)",
            lambda r: ", ".join(f"{m / 1024:.2f} GB" for m in sorted(r["launch"]["peak_rss_mb"])) if "launch" in r else "-"),
        row("training examples/s (last update)", lambda r: f"{r['examples_per_second']:.1f}"),
        row("training real tokens/s (examples/s x real tokens per training example)",
            lambda r: f"{r['examples_per_second'] * r['mean_train_tokens']:,.0f} "
                      f"({r['mean_train_tokens']:.1f} tokens per example)"),
        row("evaluation of every dev set", lambda r: f"{dev_examples() / train_eval(r):.0f} examples/s "
            f"({dev_examples():,} in {train_eval(r):.0f} s)"),
        row("GLUE submission (every test set)", lambda r: f"{r['submission']['seconds']:.0f} s, "
            f"{sum(v or 0 for v in r['submission']['rows'].values()):,} rows, peak {max(r['submission']['peak_rss_mb']) / 1024:.2f} GB"),
    ]


def write_report(out: Path, report: Path) -> None:
    results = [json.loads(path.read_text()) for path in sorted(out.glob("results-*.json"))]
    for result in results:  # runs recorded before this figure was
        if "mean_train_tokens" not in result:
            result["mean_train_tokens"] = mean_train_tokens(out, result["encoder"], 128)
    results.sort(key=lambda r: r["label"] != "before")
    lines = [REPORT_START, "", *table(results), "", REPORT_END]
    text = report.read_text()
    if REPORT_START in text:
        text = text[: text.index(REPORT_START)] + "\n".join(lines) + text[text.index(REPORT_END) + len(REPORT_END):]
    else:
        text += "\n" + "\n".join(lines) + "\n"
    report.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "rehearsal")
    parser.add_argument("--encoder", choices=("tiny", "minilm", "bert-base"), default="tiny", help=(
        "random weights of this size (the data is synthetic: weights would learn nothing). tiny (2 layers, hidden "
        "128) keeps the rehearsal of the data path short on a CPU; minilm and bert-base measure the model's own "
        "cost, many times longer there (docs/performance.md)"))
    parser.add_argument("--steps", type=int, default=200, help="optimizer updates of the training run")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--processes", type=int, default=2, help="processes of the accelerate launch run (1: none)")
    parser.add_argument("--mtdnn-src", help="run the mtdnn of this checkout (e.g. an older commit's worktree)")
    parser.add_argument("--label", default="after", help="the column of this run in the report")
    parser.add_argument("--report", type=Path, help="write the table of every recorded run into this file")
    parser.add_argument("--report-only", action="store_true", help="only write the report from recorded runs")
    args = parser.parse_args()
    if not args.report_only:
        result = rehearse(args)
        print("\n".join(table([result])))
    if args.report:
        write_report(args.output_dir.resolve(), args.report)


if __name__ == "__main__":
    main()
