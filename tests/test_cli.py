"""End to end through the CLI: train on all four task types, evaluate, predict, and user errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mtdnn.cli import main
from mtdnn.metrics import compute_metrics
from mtdnn.sources import load_split
from mtdnn.tasks import TaskSpec


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, task_files, tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": list(task_files.values()),
              "data": {"max_seq_length": 32}, "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3,
                                                        "eval_batch_size": 5, "log_every_steps": 2}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", f"output_dir={directory / 'out'}"]) == 0
    return directory / "out"


def test_train_writes_run_files_and_metrics(trained_run):
    for name in ("config.yaml", "metrics.jsonl", "last/model.safetensors", "last/mtdnn_tasks.json",
                 "last/tokenizer.json", "last/mtdnn_config.yaml", "best/model.safetensors"):
        assert (trained_run / name).is_file(), name
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if row["type"] == "eval"]
    assert [row["epoch"] for row in evals] == [1, 2]
    assert set(evals[-1]["metrics"]) == {"single", "pair", "score", "rank"}
    assert set(evals[-1]["metrics"]["pair"]) == {"accuracy", "f1"}
    assert set(evals[-1]["metrics"]["score"]) == {"pearson", "spearmanr"}
    losses = [row["loss"] for row in rows if row["type"] == "train"]
    assert losses and all(np.isfinite(losses))


def test_evaluate_reproduces_logged_metrics(trained_run, capsys):
    assert main(["evaluate", str(trained_run / "last")]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert "batch" not in captured.err  # no progress bar where stderr is no terminal (a log file, a pipe)
    logged = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert printed.keys() == logged["metrics"].keys()
    for task, metrics in printed.items():
        for name, value in metrics.items():
            assert value == pytest.approx(logged["metrics"][task][name], abs=1e-6), (task, name)


def test_predict_files_recompute_to_the_same_metrics(trained_run, task_files, tmp_path, capsys):
    assert main(["evaluate", str(trained_run / "last"), "--tasks", "single,score"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["predict", str(trained_run / "last"), "--tasks", "single,score", "--split", "dev",
                 "--output-dir", str(tmp_path)]) == 0
    for name in ("single", "score"):
        task = TaskSpec.from_dict(task_files[name])
        with open(tmp_path / f"{name}.tsv") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        assert rows[0] == ["index", "prediction"]
        truth = load_split(task, "dev", None)
        assert [int(r[0]) for r in rows[1:]] == truth["idx"]
        values = [r[1] for r in rows[1:]]
        predictions = ([task.label_names.index(v) for v in values] if task.label_names else [float(v) for v in values])
        recomputed = compute_metrics(task.metrics, task.type, np.array(predictions), np.array(truth["label"]))
        for metric, value in recomputed.items():  # regression values are written with 6 decimals
            assert value == pytest.approx(expected[name][metric], abs=1e-3)


def test_existing_run_is_not_overwritten(trained_run, tmp_path):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    before = (trained_run / "metrics.jsonl").read_text()
    assert main(["train", str(path), "--set", f"output_dir={trained_run}"]) == 2
    assert (trained_run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("arguments, message", [
    (["train", "missing.yaml"], "config file missing.yaml does not exist"),
    (["evaluate", "/nonexistent/ckpt"], "checkpoint directory /nonexistent/ckpt does not exist"),
])
def test_user_errors_exit_non_zero_without_traceback(arguments, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mtdnn", *arguments], capture_output=True, text=True,
                            cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_task_and_bad_key_through_the_cli(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("tasks: [sst2, nope]\n")
    assert main(["train", str(path), "--set", f"output_dir={tmp_path / 'o'}"]) == 2
    assert "unknown task `nope`" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "train.lr=1"]) == 2
    assert "unknown config key `train.lr`" in capsys.readouterr().err


def test_best_checkpoint_carries_the_card_of_its_evaluation(trained_run):
    """best/ is hard links to a step checkpoint's files: its card is that checkpoint's, with its dev metrics."""
    from huggingface_hub import ModelCard

    state = json.loads((trained_run / "best" / "trainer_state.json").read_text())
    card = ModelCard.load(trained_run / "best" / "README.md")
    step = trained_run / "checkpoints" / f"step-{state['step']}" / "README.md"
    assert step.exists() and step.samefile(trained_run / "best" / "README.md")
    logged = {(result.dataset_name, result.metric_type): result.metric_value for result in card.data.eval_results}
    expected = {(task, metric): value for task, metrics in state["dev_metrics"].items()
                for metric, value in metrics.items() if np.isfinite(value)}
    assert logged == pytest.approx(expected) and len(expected) >= 6
    assert f"step {state['step']}, epoch {state['epoch']}" in card.text
    assert "README.md" in json.loads((trained_run / "best" / "mtdnn_manifest.json").read_text())["files"]
