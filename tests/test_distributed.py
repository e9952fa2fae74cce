"""Two processes through `accelerate launch` (gloo on CPU) train and evaluate like one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


ACCELERATE = Path(sys.executable).parent / "accelerate"


def _launch(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtdnn", *arguments],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(not ACCELERATE.exists() and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_two_processes_share_the_schedule_and_gather_metrics_exactly(tiny_model_dir, task_files, tmp_path):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "data": {"max_seq_length": 32}, "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3,
                                                          "eval_batch_size": 7}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # On a machine without GPUs, accelerate runs processes on the CPU with gloo when ACCELERATE_USE_CPU is set.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtdnn", "train", str(path),
                             "--set", f"output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)  # printed once, by the main process
    assert printed["step"] == 16  # 64 examples per task, global batch 2 x 4: 8 + 8 updates
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len([row for row in logged if row["type"] == "eval"]) == 1  # written once, not once per rank
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-16"]
    # One process, same thread count (so the same float summation order) as each of the two above.
    evaluated = subprocess.run([sys.executable, "-m", "mtdnn", "evaluate", str(tmp_path / "out" / "last")],
                               capture_output=True, text=True, env=env, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    single_process = json.loads(evaluated.stdout)
    assert single_process.keys() == logged[-1]["metrics"].keys()
    for task, metrics in single_process.items():  # no example dropped or counted twice
        for name, value in metrics.items():
            assert value == pytest.approx(logged[-1]["metrics"][task][name], abs=1e-6)


# Rank 1 alone receives SIGTERM during the optimizer step of update `number`; rank 0 never does.
ONE_RANK_SIGNALLED = """
import os, signal, sys
import mtdnn.run_loop as run_loop
number, calls, original = int(sys.argv[1]), [], run_loop.apply_gradients
def apply_gradients(*args, **kwargs):
    original(*args, **kwargs)
    calls.append(1)
    if len(calls) == number and int(os.environ["RANK"]) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
run_loop.apply_gradients = apply_gradients
from mtdnn.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(not ACCELERATE.exists() and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_update(tiny_model_dir, task_files, tmp_path):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "data": {"max_seq_length": 32}, "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3}}
    path, script, out = tmp_path / "config.yaml", tmp_path / "signalled.py", tmp_path / "out"
    path.write_text(yaml.safe_dump(config))
    script.write_text(ONE_RANK_SIGNALLED)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    stopped = subprocess.run([*launch, str(script), "5", "train", str(path), "--set", f"output_dir={out}"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert stopped.returncode != 0
    # Rank 1's signal reaches both ranks with the flags of the next batch: both finish update 6, save it, stop.
    assert stopped.stderr.count("continue with --resume") == 2, stopped.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6"]
    assert json.loads((out / "last" / "trainer_state.json").read_text())["position"]["step"] == 6
    resumed = subprocess.run([*launch, "-m", "mtdnn", "train", str(path), "--set", f"output_dir={out}", "--resume"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["step"] == 16


def test_process_share_weights_each_process_by_its_examples_and_gives_an_empty_one_a_zero_weight_example():
    import numpy as np

    from mtdnn.run_loop import process_share

    indices = np.array([7, 3, 5])
    shares = [process_share(indices, rank, 2) for rank in range(2)]
    assert [share.tolist() for share, _ in shares] == [[7, 5], [3]]
    assert [weight for _, weight in shares] == pytest.approx([4 / 3, 2 / 3])  # mean of the means = the batch mean
    share, weight = process_share(np.array([9]), 1, 2)
    assert share.tolist() == [9] and weight == 0.0
    assert process_share(indices, 0, 1)[1] == 1.0  # one process: its loss unchanged


@pytest.mark.skipif(not ACCELERATE.exists() and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_two_processes_train_through_a_last_batch_of_one_example(tiny_model_dir, task_files, tmp_path):
    """9 examples in global batches of 2 x 4: the last batch holds 1 example, and rank 1 gets none of it."""
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"]],
              "data": {"max_seq_length": 32, "max_train_samples": 9, "max_eval_samples": 5},
              "train": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "log_every_steps": 1,
                        "report_to": ["tensorboard"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtdnn", "train", str(path),
                             "--set", f"output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["step"] == 4  # 2 epochs of 2 batches (8 + 1 examples)
    # The main process tokenises; the other maps its cache: once per split, not once per process.
    logged = [line for line in result.stderr.splitlines() if line.startswith("INFO mtdnn.token_cache: tokenising")]
    assert [line.split(":")[1].strip() for line in logged] == ["tokenising single train", "tokenising single dev"]
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if row["type"] == "train"] == [1, 2, 3, 4]
    assert all(row["loss"] == row["loss"] for row in logged if row["type"] == "train")  # finite, not NaN
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(tmp_path / "out" / "logs" / "mtdnn"))
    reader.Reload()  # the main process alone reports to the trackers: each row once
    assert [event.step for event in reader.Scalars("train/loss")] == [1, 2, 3, 4]
    assert len(list((tmp_path / "out" / "logs" / "mtdnn").glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("sharded", ["FSDP", "DEEPSPEED", "MEGATRON_LM"])
def test_sharded_setups_are_refused_with_a_clear_error(sharded):
    """FSDP and DeepSpeed are not supported (checkpoints are the main process's whole state); DDP is."""
    from accelerate.utils import DistributedType

    from mtdnn.errors import MTDNNError
    from mtdnn.run_loop import check_distribution

    with pytest.raises(MTDNNError, match=f"configured for {sharded}.*Train with DDP"):
        check_distribution(DistributedType[sharded])
    for supported in ("NO", "MULTI_CPU", "MULTI_GPU"):
        check_distribution(DistributedType[supported])


@pytest.mark.skipif(not ACCELERATE.exists() and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_the_toolbox_trains_in_two_processes(tiny_model_dir, task_files, tmp_path):
    """SMART (its extra passes through the encoder), a SAN head, task embeddings, soft sharing with a LoRA adapter
    per encoder and gradient checkpointing, all at once under DDP: the run completes, and one process evaluating
    the checkpoint gives the metrics the two logged."""
    pair = {**task_files["pair"], "answer_module": "san"}
    config = {"model": {"name_or_path": str(tiny_model_dir), "task_embeddings": True, "sharing": "soft",
                        "encoder_groups": [["single"], ["score", "pair"]], "lora": {"r": 4},
                        "gradient_checkpointing": True},
              "tasks": [task_files["single"], task_files["score"], pair], "data": {"max_seq_length": 32},
              "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "eval_batch_size": 7,
                        "adversarial": {"weight": 1.0}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    result = _launch(["train", str(path), "--set", f"output_dir={tmp_path / 'out'}"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["step"] == 24  # 64 examples per task, global batch 2 x 4: 3 x 8 updates
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()][-1]
    evaluated = subprocess.run([sys.executable, "-m", "mtdnn", "evaluate", str(tmp_path / "out" / "last")],
                               capture_output=True, text=True, env=env, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    for task, metrics in json.loads(evaluated.stdout).items():
        for name, value in metrics.items():
            assert value == pytest.approx(logged["metrics"][task][name], abs=1e-6), (task, name)


@pytest.mark.skipif(not ACCELERATE.exists() and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_evaluate_and_predict_share_the_work_of_two_processes(tiny_checkpoint, tmp_path):
    """Each process runs half the batches (24 dev examples, batches of 5: 3 and 2), the logits are gathered: the
    metrics and prediction files are one process's, printed and written once."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    alone = subprocess.run([sys.executable, "-m", "mtdnn", "evaluate", str(tiny_checkpoint), "--batch-size", "5"],
                           capture_output=True, text=True, env=env, timeout=300)
    shared = _launch(["evaluate", str(tiny_checkpoint), "--batch-size", "5"], env)
    assert alone.returncode == 0 and shared.returncode == 0, shared.stderr[-3000:]
    assert json.loads(shared.stdout) == json.loads(alone.stdout)  # printed once: one JSON document
    for directory, command in (("alone", [sys.executable, "-m", "mtdnn"]), ("shared", None)):
        arguments = ["predict", str(tiny_checkpoint), "--split", "dev", "--batch-size", "5", "--output-dir",
                     str(tmp_path / directory)]
        result = _launch(arguments, env) if command is None else subprocess.run(
            command + arguments, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(path.name for path in (tmp_path / "alone").iterdir())
    assert files == sorted(path.name for path in (tmp_path / "shared").iterdir()) and len(files) == 4
    for name in files:
        assert (tmp_path / "shared" / name).read_text() == (tmp_path / "alone" / name).read_text(), name
