"""Bigger encoders on smaller memory: gradient checkpointing, frozen embeddings and layers, and a LoRA adapter
trained, resumed, evaluated, predicted, exported and fine-tuned through the command line."""

import json
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import AlbertConfig, AlbertModel, BertModel

from conftest import tiny_bert_config, write_train_config
from mtdnn.adapters import lora_of, prepare_encoders, trainable_parameters, transformer_layers
from mtdnn.cli import main
from mtdnn.config import LoraSettings, ModelSettings, OptimizationSettings
from mtdnn.errors import MTDNNError
from mtdnn.inference import Predictor
from mtdnn.model import MTDNNModel
from mtdnn.optimization import build_optimizer
from mtdnn.tasks import GLUE_TASKS
from test_training import KILLER

LORA = LoraSettings(r=4, alpha=8.0, dropout=0.1)
SENTENCES = ["a good movie", "the plot was very dull and the film was not fun", "great"]


def _model(encoders=1, **settings) -> MTDNNModel:
    torch.manual_seed(0)
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "cola")}
    groups = [["mnli"], ["cola"]] if encoders == 2 else None
    return prepare_encoders(MTDNNModel(BertModel(tiny_bert_config()), tasks, groups), ModelSettings(**settings))


def _inputs(batch=4, seq=9):
    torch.manual_seed(1)
    return {"input_ids": torch.randint(5, 99, (batch, seq)), "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "labels": torch.tensor([0, 2, 1, 1])}


def _loss_and_gradients(model: MTDNNModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training forward and backward, dropout on, from the same RNG state."""
    model.train()
    inputs = _inputs()
    torch.manual_seed(2)  # dropout's draws
    loss = model("mnli", **inputs).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("settings", [{}, {"lora": LORA, "freeze_embeddings": True}])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(settings):
    """The layers' forward runs again in the backward pass (that is the saving), with the same dropout masks; with
    frozen embeddings and LoRA the adapters inside the checkpointed layers still get their gradients."""
    plain, checkpointed = _model(**settings), _model(gradient_checkpointing=True, **settings)
    calls = []
    checkpointed.encoder.encoder.layer[0].attention.register_forward_hook(lambda *args: calls.append(1))
    expected_loss, expected = _loss_and_gradients(plain)
    loss, gradients = _loss_and_gradients(checkpointed)
    assert len(calls) == 2  # forward, then recomputed in the backward pass
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-7)
    assert gradients.keys() == expected.keys()
    assert any(".lora_B." in name for name in gradients) == ("lora" in settings)
    assert "encoder.encoder.layer.1.attention.self.value.weight" in gradients or "lora" in settings
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-5, atol=1e-7, msg=name)
    checkpointed.eval()
    with torch.no_grad():
        checkpointed("mnli", **_inputs())
    assert len(calls) == 3  # no recomputation outside training


def test_freezing_leaves_the_optimizer_only_the_trainable_parameters():
    model = _model(freeze_embeddings=True, freeze_layers=1)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for name in frozen)
    assert any(name.startswith("encoder.embeddings.LayerNorm") for name in frozen)
    trainable, total = trainable_parameters(model)
    assert trainable_parameters(_model())[0] == total > trainable
    optimizer = build_optimizer(model, OptimizationSettings())
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trainable


def test_lora_trains_the_adapter_and_the_heads_only_and_soft_sharing_gets_one_adapter_per_encoder(tmp_path):
    model = _model(encoders=2, lora=LORA)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name or name.startswith("heads.") for name in trainable)
    assert {"heads.mnli.out_proj.weight", "heads.cola.out_proj.weight"} <= trainable
    assert [lora_of(encoder) for encoder in model.encoders()] == [LoraSettings(4, 8.0, 0.1, ["query", "value"])] * 2
    model.save_pretrained(tmp_path)
    loaded = MTDNNModel.from_pretrained(tmp_path)
    assert [lora_of(encoder) for encoder in loaded.encoders()] == [lora_of(model.encoder)] * 2
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_an_adapter_not_asked_for_is_merged_into_the_encoder():
    """Stage 3 (or a transfer) from a LoRA checkpoint with `model.lora.r: 0`: full fine-tuning of the merged weights."""
    model = _model(lora=LORA)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at 0: make the update matter
            torch.nn.init.normal_(parameter)
    model.eval()
    inputs = {key: value for key, value in _inputs().items() if key != "labels"}
    before = model("mnli", **inputs).logits
    prepare_encoders(model, ModelSettings())
    assert lora_of(model.encoder) is None and not any("lora_" in name for name in model.state_dict())
    assert trainable_parameters(model)[0] == trainable_parameters(model)[1]
    torch.testing.assert_close(model("mnli", **inputs).logits, before, rtol=1e-5, atol=1e-6)


def test_encoder_settings_that_cannot_apply_are_errors():
    with pytest.raises(MTDNNError, match="freeze_layers` is 3, but this bert encoder has 2 transformer layers"):
        _model(freeze_layers=3)
    with pytest.raises(MTDNNError, match="target_modules` names `valu`, which is no layer.*query, value"):
        _model(lora=LoraSettings(r=4, target_modules=["query", "valu"]))
    with pytest.raises(MTDNNError, match="peft cannot adapt"):
        _model(lora=LoraSettings(r=4, target_modules=["LayerNorm"]))
    albert = AlbertModel(AlbertConfig(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=37))  # one layer shared by all
    with pytest.raises(MTDNNError, match="cannot find the transformer layers of this albert encoder"):
        transformer_layers(albert)


# Through the command line: a LoRA run, killed and resumed, evaluated, predicted, exported and fine-tuned.

@pytest.fixture(scope="module")
def config_path(tiny_model_dir, task_files, tmp_path_factory):
    return write_train_config(tmp_path_factory.mktemp("config"), tiny_model_dir,
                              [task_files["single"], task_files["score"]], epochs=1, learning_rate=1e-2,
                              log_every_steps=2, save_every_steps=3, keep_checkpoints=2)


VARIANTS = {
    "lora": ["model.lora.r=4", "model.lora.target_modules=[query,key,value,dense]"],
    "checkpointing+frozen": ["model.gradient_checkpointing=true", "model.freeze_embeddings=true",
                             "model.freeze_layers=1"],
}


def _sets(variant: str, output_dir, leave_out: str | None = None) -> list[str]:
    values = [value for value in [*VARIANTS[variant], f"output_dir={output_dir}"] if value != leave_out]
    return [argument for value in values for argument in ("--set", value)]


def _run(config_path, variant: str, output_dir):
    assert main(["train", str(config_path), *_sets(variant, output_dir)]) == 0
    return output_dir


@pytest.fixture(scope="module")
def lora_run(config_path, tmp_path_factory):
    return _run(config_path, "lora", tmp_path_factory.mktemp("lora") / "run")


@pytest.fixture(scope="module")
def frozen_run(config_path, tmp_path_factory):
    return _run(config_path, "checkpointing+frozen", tmp_path_factory.mktemp("frozen") / "run")


@pytest.mark.parametrize("variant, whole", [("lora", "lora_run"), ("checkpointing+frozen", "frozen_run")])
def test_killed_run_resumes_to_identical_weights(config_path, tmp_path, request, variant, whole):
    whole, run = request.getfixturevalue(whole), tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLER, "after_log", "10", "train", str(config_path),
                            *_sets(variant, run)], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    assert main(["train", str(config_path), *_sets(variant, run), "--resume"]) == 0
    expected, resumed = (load_file(path / "last" / "model.safetensors") for path in (whole, run))
    assert expected.keys() == resumed.keys()
    assert any(".lora_A." in name for name in expected) == (variant == "lora")
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_frozen_weights_are_bit_identical_after_training(config_path, frozen_run, tiny_model_dir, tmp_path):
    """Embeddings and layer 0 as loaded; layer 1 and the pooler trained. Checkpointing changes nothing but float
    noise: the same run without it ends at the same weights."""
    plain = _sets("checkpointing+frozen", tmp_path / "plain", leave_out="model.gradient_checkpointing=true")
    assert main(["train", str(config_path), *plain]) == 0
    pretrained = load_file(tiny_model_dir / "model.safetensors")
    trained, plain = (load_file(path / "last" / "model.safetensors") for path in (frozen_run, tmp_path / "plain"))
    frozen = [name for name in pretrained if name.startswith(("embeddings.", "encoder.layer.0."))]
    assert len(frozen) > 10 and all(torch.equal(trained[f"encoder.{name}"], pretrained[name]) for name in frozen)
    assert not torch.equal(trained["encoder.encoder.layer.1.output.dense.weight"],
                           pretrained["encoder.layer.1.output.dense.weight"])
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_lora_run_keeps_the_pretrained_weights_and_records_its_adapter(lora_run, tiny_model_dir):
    table = json.loads((lora_run / "last" / "mtdnn_tasks.json").read_text())
    assert table["lora"] == {"r": 4, "alpha": 16.0, "dropout": 0.1,
                             "target_modules": ["dense", "key", "query", "value"]}
    pretrained = load_file(tiny_model_dir / "model.safetensors")
    trained = load_file(lora_run / "last" / "model.safetensors")
    for name, tensor in pretrained.items():  # every encoder weight as loaded, an adapted layer's under `base_layer`
        module, _, kind = name.rpartition(".")
        saved = f"encoder.{name}" if f"encoder.{name}" in trained else f"encoder.{module}.base_layer.{kind}"
        assert torch.equal(trained[saved], tensor), name
    assert any(tensor.abs().max() > 0 for name, tensor in trained.items() if ".lora_B." in name)  # B started at 0


def test_lora_checkpoint_evaluates_predicts_and_exports_to_a_pipeline(lora_run, tmp_path, capsys):
    checkpoint = lora_run / "best"
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics == json.loads((checkpoint / "trainer_state.json").read_text())["dev_metrics"]
    assert main(["predict", str(checkpoint), "--tasks", "single", "--split", "dev", "--output-dir",
                 str(tmp_path / "predictions")]) == 0
    assert len((tmp_path / "predictions" / "single.tsv").read_text().splitlines()) == 24 + 1
    assert main(["export", str(checkpoint), str(tmp_path / "export"), "--task", "single"]) == 0
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert not any("lora_" in name or "base_layer" in name for name in exported)  # a plain model, adapter merged
    classify = transformers.pipeline("text-classification", model=str(tmp_path / "export"), device="cpu")
    with torch.inference_mode():
        theirs = torch.stack([classify.model(**classify.tokenizer(text, return_tensors="pt")).logits[0]
                              for text in SENTENCES])
    ours = torch.from_numpy(Predictor.from_pretrained(checkpoint, device="cpu").logits("single", SENTENCES))
    assert (ours[:, 1] - ours[:, 0]).abs().max() > 1e-3  # the trained adapter moved the logits apart
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    labels = [row["label"] for row in classify(SENTENCES)]
    assert labels == [("neg", "pos")[int(row.argmax())] for row in ours]


def test_exporting_every_task_merges_the_adapter_once(lora_run, tmp_path, monkeypatch, capsys):
    from mtdnn import adapters

    merges = []
    merge = adapters.merge_lora
    monkeypatch.setattr(adapters, "merge_lora", lambda encoder: merges.append(encoder) or merge(encoder))
    assert main(["export", str(lora_run / "best"), str(tmp_path / "export")]) == 0
    index = json.loads((tmp_path / "export" / "index.json").read_text())
    assert len(index["tasks"]) >= 2 and len(merges) == 1  # one encoder here: merged once, not once per head
    for task in index["tasks"].values():
        exported = load_file(tmp_path / "export" / task["directory"] / "model.safetensors")
        assert not any("lora_" in name or "base_layer" in name for name in exported)


def test_finetune_continues_a_lora_checkpoint_with_its_adapter(lora_run, tmp_path, capsys):
    output_dir = tmp_path / "ft"
    assert main(["finetune", str(lora_run / "best"), "--task", "single", "--set", "train.max_steps=3",
                 "--set", f"output_dir={output_dir}"]) == 0
    before, after = (load_file(path / "model.safetensors") for path in (lora_run / "best", output_dir / "last"))
    assert json.loads((output_dir / "last" / "mtdnn_tasks.json").read_text())["lora"]["r"] == 4
    encoder = [name for name in after if name.startswith("encoder.")]
    assert all(torch.equal(after[name], before[name]) for name in encoder if ".lora_" not in name)
    assert not all(torch.equal(after[name], before[name]) for name in encoder if ".lora_" in name)


def test_checkpointing_and_lora_train_with_smart(config_path, tmp_path):
    """SMART takes `torch.autograd.grad` of the perturbation through the checkpointed layers (the reentrant form
    would refuse it)."""
    sets = ["model.gradient_checkpointing=true", "model.lora.r=4", "train.adversarial.weight=1.0", "train.max_steps=2",
            f"output_dir={tmp_path / 'run'}"]
    assert main(["train", str(config_path), *[argument for value in sets for argument in ("--set", value)]]) == 0


@pytest.mark.parametrize("settings, message", [
    (["model.freeze_layers=7"], "`model.freeze_layers` is 7, but this bert encoder has 2 transformer layers"),
    (["model.lora.r=-1"], "model.lora needs r >= 0"),
    (["model.lora.r=4", "model.lora.target_modules=[qurey]"],
     "`model.lora.target_modules` names `qurey`, which is no layer"),
])
def test_bad_settings_exit_2_naming_the_key(config_path, tmp_path, capsys, settings, message):
    sets = [argument for value in [*settings, f"output_dir={tmp_path / 'run'}"] for argument in ("--set", value)]
    capsys.readouterr()
    assert main(["train", str(config_path), *sets]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error


def test_a_run_resumes_with_gradient_checkpointing_turned_on(config_path, frozen_run, tmp_path):
    """A run that ran out of memory may resume with checkpointing on: it changes no update (README, Resuming)."""
    run = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLER, "after_log", "10", "train", str(config_path),
                            *_sets("checkpointing+frozen", run, leave_out="model.gradient_checkpointing=true")],
                           capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    assert main(["train", str(config_path), *_sets("checkpointing+frozen", run), "--resume"]) == 0
    expected, resumed = (load_file(path / "last" / "model.safetensors") for path in (frozen_run, run))
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)
