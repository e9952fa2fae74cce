"""MT-DNN-KD: `mtdnn distill` stores the teachers' logits per task keyed by example id and trains a student on
the mix of hard-label and soft-target losses."""

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_checkpoint
from mtdnn.checkpoint import load_checkpoint, save_checkpoint
from mtdnn.cli import main
from mtdnn.config import build_settings, Config
from mtdnn.data import load_task_data
from mtdnn.soft_targets import read_soft_targets, write_soft_targets
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import task_logits
from mtdnn.losses import distillation_loss
from mtdnn.objective import Objective


@pytest.fixture(scope="module")
def teachers(tiny_model_dir, task_files, tmp_path_factory):
    """Two different (untrained) teachers with heads for all four own tasks."""
    first = make_checkpoint(tmp_path_factory.mktemp("teacher_a"), tiny_model_dir, list(task_files.values()))
    model, tokenizer, config, _ = load_checkpoint(first)
    torch.manual_seed(1)
    for head in model.heads.values():
        torch.nn.init.normal_(head.out_proj.weight, std=0.5)
    second = tmp_path_factory.mktemp("teacher_b") / "best"
    save_checkpoint(second, model, tokenizer, config, {"step": 0})
    return [first, second]


def test_distill_writes_soft_targets_per_task_and_trains_the_student(teachers, tiny_model_dir, task_files, tmp_path,
                                                                   capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir)},
              "tasks": [task_files["single"], task_files["score"], task_files["rank"]],
              "data": {"max_seq_length": 32, "max_train_samples": 40},
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "log_every_steps": 2,
                        "distillation": {"weight": 0.7, "temperature": 2.0}}}
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "student"
    assert main(["distill", str(path), "--teachers", ",".join(map(str, teachers)), "--set", f"output_dir={out}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["soft_targets"] == str(out / "soft_targets") and printed["step"] > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["distillation"]["soft_targets"] == str(
        out / "soft_targets")
    for name in ("single", "score", "rank"):
        stored = load_file(out / "soft_targets" / f"{name}.safetensors")
        model, tokenizer, teacher_config, _ = load_checkpoint(teachers[1])
        data = load_task_data(model.tasks[name], "train", tokenizer, build_settings(Config, config).data, 40)
        assert stored["idx"].tolist() == data.idx.tolist()
        assert stored["logits"].shape[:2] == (2, len(data))  # (teachers, examples, outputs)
        np.testing.assert_allclose(stored["logits"][1].numpy(), task_logits(model, data, 16), rtol=1e-5, atol=1e-6)
    assert (out / "last" / "model.safetensors").is_file()
    assert main(["evaluate", str(out / "last")]) == 0


def test_soft_targets_follow_the_data_order_and_must_cover_it(tiny_checkpoint, task_files, tmp_path):
    model, tokenizer, config, _ = load_checkpoint(tiny_checkpoint)
    data = load_task_data(model.tasks["single"], "train", tokenizer, config.data, 10)
    logits = np.arange(2 * 10 * 2, dtype=np.float32).reshape(2, 10, 2)
    shuffled = list(reversed(range(10)))
    write_soft_targets(tmp_path, data.task, [data.idx[i] for i in shuffled], logits[:, shuffled], [tiny_checkpoint])
    torch.testing.assert_close(read_soft_targets(tmp_path, data), torch.from_numpy(logits))
    write_soft_targets(tmp_path, data.task, data.idx[:5], logits[:, :5], [tiny_checkpoint])
    with pytest.raises(MTDNNError, match="no soft targets for example idx"):
        read_soft_targets(tmp_path, data)
    assert read_soft_targets(tmp_path / "none", data) is None


def test_objective_mixes_hard_and_soft_losses(tiny_checkpoint):
    model, tokenizer, config, _ = load_checkpoint(tiny_checkpoint)
    model.eval()
    config.train.distillation.weight, config.train.distillation.temperature = 0.25, 1.0
    data = load_task_data(model.tasks["pair"], "train", tokenizer, config.data, 8)
    teachers = torch.randn(3, 8, 2)
    objective = Objective(config.train.distillation, soft_targets={"pair": teachers})
    positions = np.array([5, 1, 2])
    batch = data.collate(positions)
    output = model("pair", **batch)
    soft = distillation_loss("pair_classification", output.logits, teachers[:, positions])
    expected = 0.75 * output.loss + 0.25 * soft
    assert objective(model, model, "pair", batch, positions).item() == pytest.approx(expected.item(), rel=1e-6)
    assert Objective()(model, model, "pair", batch, positions).item() == pytest.approx(output.loss.item())


def test_distill_in_two_processes_matches_the_teachers_and_trains(teachers, tiny_model_dir, task_files, tmp_path):
    """`accelerate launch -m mtdnn distill` (gloo on the CPU): the soft targets are the teachers' logits, written
    once, and the student trains in both processes."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists() and not shutil.which("accelerate"):
        pytest.skip("accelerate CLI not installed")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["rank"]],
              "data": {"max_seq_length": 32, "max_train_samples": 40},
              "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "eval_batch_size": 7,
                        "distillation": {"weight": 0.7, "temperature": 2.0}}}
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "student"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtdnn", "distill", str(path),
                             "--teachers", ",".join(map(str, teachers)), "--set", f"output_dir={out}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, "\n".join(line for line in result.stderr.splitlines() if "it/s" not in line)[-3000:]
    printed = json.loads(result.stdout)  # by the main process alone
    assert printed["step"] == 7  # 40 + 16 (ranking) examples in global batches of 2 x 4: 5 + 2 updates
    for name in ("single", "rank"):
        stored = load_file(out / "soft_targets" / f"{name}.safetensors")
        for k, teacher in enumerate(teachers):
            model, tokenizer, _, _ = load_checkpoint(teacher)
            data = load_task_data(model.tasks[name], "train", tokenizer, build_settings(Config, config).data, 40)
            assert stored["idx"].tolist() == data.idx.tolist()
            np.testing.assert_allclose(stored["logits"][k].numpy(), task_logits(model, data, 16), rtol=1e-5,
                                       atol=1e-6)
    assert json.loads((out / "last" / "trainer_state.json").read_text())["position"]["step"] == 7
