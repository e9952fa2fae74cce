"""Stage 1: masked-LM pre-training writes an encoder directory stage 2 loads; masking, resume, errors."""

import json
import os
import random
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

import mtdnn.pretraining as pretraining
import mtdnn.run_loop as run_loop
from conftest import GLUE_DIR, WORDS, needs_glue
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.mlm_data import MaskedText, glue_sentences
from mtdnn.model import MTDNNModel
from mtdnn.pretrain_config import MaskingSettings, load_pretrain_config
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import GLUE_TASKS


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Sentences with a learnable pattern (the same few words recur), and a blank line to skip."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    lines = [" ".join(rng.choice(WORDS[:8]) for _ in range(rng.randint(3, 10))) for _ in range(240)]
    path.write_text("\n".join(lines[:100] + [""] + lines[100:]) + "\n")
    return path


def _config(tmp_path, model_dir, text_file, **train) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = {"model": {"name_or_path": str(model_dir)},
              "data": {"text_files": [str(text_file)], "max_seq_length": 16, "eval_lines": 40},
              "train": {"max_steps": 30, "batch_size": 16, "learning_rate": 2e-3, "save_every_steps": None,
                        "log_every_steps": 10, **train},
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_pretrain_lowers_held_out_loss_and_writes_an_encoder_for_stage_2(tiny_model_dir, text_file, tmp_path, capsys):
    assert main(["pretrain", _config(tmp_path, tiny_model_dir, text_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["held_out_lines"] == 40 and result["step"] == 30
    assert result["after"]["loss"] < result["before"]["loss"] - 0.5
    assert result["after"]["perplexity"] == pytest.approx(2.718281828 ** result["after"]["loss"], rel=1e-6)
    out = tmp_path / "out"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "pretrain_config.yaml", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists() and not (out / "last").exists()  # nothing left to resume
    encoder, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]  # the pooler, which a masked-LM model lacks, is in the weights file too
    original = AutoModel.from_pretrained(tiny_model_dir)
    torch.testing.assert_close(encoder.pooler.dense.weight, original.pooler.dense.weight)
    assert not torch.equal(encoder.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)
    model = MTDNNModel.from_encoder(str(out), {"cola": GLUE_TASKS["cola"]})
    torch.testing.assert_close(model.encoder.embeddings.word_embeddings.weight,
                               encoder.embeddings.word_embeddings.weight)


def test_whole_word_masking_masks_every_piece_of_a_word(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = ["zebra quokka the film", "xylophone good jazz"]  # unknown words split into letters
    encoded = tokenizer(text, return_special_tokens_mask=True, return_offsets_mapping=True)
    columns = {key: encoded[key] for key in ("input_ids", "special_tokens_mask", "offset_mapping")}
    masked = MaskedText(columns, tokenizer, MaskingSettings(probability=0.5, whole_word_mask=True))
    torch.manual_seed(0)
    seen_masked = 0
    for _ in range(5):
        batch = masked.collate([0, 1])
        for row in range(len(text)):
            words = {}
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None:
                    words.setdefault(word, []).append(bool(batch["labels"][row, position] != -100))
            assert all(len(set(flags)) == 1 for flags in words.values()), words  # all of a word's pieces, or none
            seen_masked += sum(flags[0] for flags in words.values())
        assert (batch["input_ids"][batch["labels"] != -100] == tokenizer.mask_token_id).all()
    assert seen_masked > 0


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tiny_model_dir, text_file, tmp_path, monkeypatch):
    settings = {"max_steps": 6, "save_every_steps": 2}
    whole = load_pretrain_config(_config(tmp_path / "a", tiny_model_dir, text_file, **settings))
    expected = pretraining.pretrain(whole)
    crashing = load_pretrain_config(_config(tmp_path / "b", tiny_model_dir, text_file, **settings))
    original = run_loop.write_checkpoint

    def save_then_crash(directory, *args, **kwargs):
        original(directory, *args, **kwargs)
        if json.loads((directory / "trainer_state.json").read_text())["position"]["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_loop, "write_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        pretraining.pretrain(crashing)
    monkeypatch.setattr(run_loop, "write_checkpoint", original)
    with pytest.raises(MTDNNError, match="pass --resume to continue it"):
        pretraining.pretrain(crashing)
    resumed = pretraining.pretrain(crashing, resume=True)
    assert resumed["after"] == expected["after"] and resumed["before"] == expected["before"]
    weights = load_file(tmp_path / "b" / "out" / "model.safetensors")
    reference = load_file(tmp_path / "a" / "out" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0)
    log = (tmp_path / "b" / "out" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(row)["step"] for row in log]
    assert steps == [0, 6]  # evaluations before and after, none repeated by the resumed run


def test_sigterm_finishes_the_step_saves_and_resume_matches_the_uninterrupted_run(tiny_model_dir, text_file, tmp_path,
                                                                                    monkeypatch, capsys):
    settings = {"max_steps": 6, "log_every_steps": 1}
    assert main(["pretrain", _config(tmp_path / "a", tiny_model_dir, text_file, **settings)]) == 0
    stopped = _config(tmp_path / "b", tiny_model_dir, text_file, **settings)
    original = run_loop.RunLog.write

    def write_then_terminate(self, row):  # SIGTERM arrives in the middle of step 3's bookkeeping
        original(self, row)
        if row.get("type") == "train" and row["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run_loop.RunLog, "write", write_then_terminate)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(["pretrain", stopped]) == 128 + signal.SIGTERM
    assert "continue with --resume" in capsys.readouterr().err
    last = tmp_path / "b" / "out" / "last"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["position"]["step"] == 3 and signal.getsignal(signal.SIGTERM) == handler
    # stage 1's checkpoint is stage 2's: a manifest, and the optimizer state in the one format (weights_only)
    assert {"mtdnn_manifest.json", "training_state.pt", "model.safetensors"} <= {p.name for p in last.iterdir()}
    monkeypatch.setattr(run_loop.RunLog, "write", original)
    weights = last / "model.safetensors"
    saved = weights.read_bytes()
    weights.write_bytes(saved[:-8] + bytes(8))  # damaged in place: refused, naming the file, nothing overwritten
    assert main(["pretrain", stopped, "--resume"]) == 2
    assert "model.safetensors has changed since it was saved" in capsys.readouterr().err
    weights.write_bytes(saved)
    assert main(["pretrain", stopped, "--resume"]) == 0
    reference = load_file(tmp_path / "a" / "out" / "model.safetensors")
    weights = load_file(tmp_path / "b" / "out" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0)


def test_from_scratch_with_packed_lines(tiny_model_dir, text_file, tmp_path, capsys):
    path = _config(tmp_path, tiny_model_dir, text_file, max_steps=2)
    assert main(["pretrain", path, "--set", "model.from_scratch=true", "--set", "data.pack_lines=true",
                 "--set", "mlm.whole_word_mask=true"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["before"]["loss"] == pytest.approx(torch.log(torch.tensor(99.0)).item(), abs=1.0)  # random weights
    encoder, info = AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"]


@pytest.mark.parametrize("override, message", [
    ("mlm.prob=0.2", "unknown config key `mlm.prob`"),
    ("data.text_files=[]", "no text to pre-train on"),
    ("data.eval_lines=5000", "has only 240 non-blank lines"),
    ("data.text_files=[/nonexistent/*.txt]", "no file matches"),
    ("mlm.probability=1.5", "mlm.probability must be in"),
])
def test_config_errors_name_the_key(tiny_model_dir, text_file, tmp_path, capsys, override, message):
    assert main(["pretrain", _config(tmp_path, tiny_model_dir, text_file), "--set", override]) == 2
    assert message in capsys.readouterr().err


@needs_glue("WNLI/train.tsv")
def test_glue_sentences_are_both_sides_once_without_labels():
    sentences = glue_sentences(["wnli"], str(GLUE_DIR))
    assert len(sentences) == len(set(sentences)) > 635  # premises repeat across rows; hypotheses add more
    assert not {"0", "1"} & set(sentences)
    with pytest.raises(MTDNNError, match="`ax` is not a GLUE task with a training split"):
        glue_sentences(["ax"], str(GLUE_DIR))


def test_an_mtdnn_checkpoint_is_not_silently_pre_trained_from_random_weights(tiny_checkpoint, text_file, tmp_path,
                                                                               capsys):
    assert main(["pretrain", _config(tmp_path, tiny_checkpoint, text_file)]) == 2
    assert "encoder weights" in capsys.readouterr().err


def test_a_batch_with_no_masked_token_trains_on_instead_of_stopping_at_nan(tiny_model_dir, text_file, tmp_path):
    """At 1% masking, batches of 2 short lines mostly mask nothing: transformers' loss over no token is NaN, and the
    run stopped ("the loss is nan ... Lower train.learning_rate"); such a batch now contributes nothing."""
    path = _config(tmp_path, tiny_model_dir, text_file, max_steps=12, batch_size=2, log_every_steps=1)
    values = yaml.safe_load(open(path))
    values["mlm"] = {"probability": 0.01}
    open(path, "w").write(yaml.safe_dump(values))
    result = pretraining.pretrain(load_pretrain_config(path))
    assert result["step"] == 12
    losses = [json.loads(line)["loss"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "train"]
    assert len(losses) == 12 and 0.0 in losses and all(loss == loss for loss in losses)  # none NaN


# Runs `mtdnn ARGS...` and writes, per rank, each training step's loss, weight and masked tokens to PREFIX.RANK.json.
RECORDING = """
import json, os, sys
import mtdnn.pretraining as pretraining
from mtdnn.mlm_data import MaskedText
prefix, rows, collate, loss = sys.argv[1], [], MaskedText.collate, pretraining.MaskedLMStage.loss
def recording_collate(self, indices):
    batch = collate(self, indices)
    self.masked = int((batch["labels"] != -100).sum())
    return batch
def recording_loss(self, batch, epoch, index):
    step = loss(self, batch, epoch, index)
    rows.append({"loss": step.loss.item(), "weight": step.weight, "masked": self.train_data.masked})
    return step
MaskedText.collate, pretraining.MaskedLMStage.loss = recording_collate, recording_loss
from mtdnn.cli import main
code = main(sys.argv[2:])
open(f"{prefix}.{os.environ['RANK']}.json", "w").write(json.dumps(rows))
sys.exit(code)
"""


def test_two_processes_pretrain_and_evaluate_like_one(tiny_model_dir, text_file, tmp_path):
    """Stage 1 under `accelerate launch` (gloo on the CPU): the processes share each global batch, the held-out loss
    is gathered exactly and the encoder is written once. 40 held-out lines in batches of 16 are 3 batches, 2 for one
    process and 1 for the other: the evaluation used to hang there (DDP's forward broadcast buffers to a process
    that had no batch left)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists() and not shutil.which("accelerate"):
        pytest.skip("accelerate CLI not installed")
    path = _config(tmp_path, tiny_model_dir, text_file, epochs=1, max_steps=None, batch_size=22, log_every_steps=1,
                   eval_batch_size=16)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    (tmp_path / "recording.py").write_text(RECORDING)
    result = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", str(tmp_path / "recording.py"),
                             str(tmp_path / "steps"), "pretrain", path],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)  # by the main process alone
    assert printed["step"] == 5  # 200 training lines in global batches of 2 x 22: 4 full and one of 24
    assert printed["after"]["loss"] < printed["before"]["loss"]
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if row["type"] == "train"] == [1, 2, 3, 4, 5]
    assert [row["step"] for row in logged if row["type"] == "eval"] == [0, 5]
    # The gradient DDP averages, of sum(weight x loss) / 2, is the whole batch's mean over its masked tokens (each
    # process masks its own share: their counts differ, and weighting by examples was not exact).
    ranks = [json.loads((tmp_path / f"steps.{rank}.json").read_text()) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    assert any(a["masked"] != b["masked"] for a, b in zip(*ranks))
    for a, b in zip(*ranks):
        per_token = (a["loss"] * a["masked"] + b["loss"] * b["masked"]) / (a["masked"] + b["masked"])
        assert (a["weight"] * a["loss"] + b["weight"] * b["loss"]) / 2 == pytest.approx(per_token, rel=1e-6)
    # The saved encoder, evaluated by one process on the same held-out masks, gives the gathered loss.
    config = load_pretrain_config(path)
    tokenizer = load_tokenizer(str(tmp_path / "out"))
    _, eval_batches, _ = pretraining.load_data(config, tokenizer)
    from accelerate import Accelerator
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    alone = pretraining.mlm_loss(model, eval_batches, Accelerator(cpu=True))
    assert alone["masked_tokens"] == printed["after"]["masked_tokens"]
    assert alone["loss"] == pytest.approx(printed["after"]["loss"], abs=1e-5)
