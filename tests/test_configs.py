"""Every file in configs/ loads and validates with the loader of the command that reads it, and the paper's recipe
(configs/mtdnn_bert_base_glue.yaml) holds the paper's settings."""

from pathlib import Path

import pytest

from mtdnn.config import Config, load_config
from mtdnn.errors import MTDNNError
from mtdnn.pretrain_config import PretrainConfig, load_pretrain_config
from mtdnn.tasks import resolve_tasks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted([*CONFIGS.glob("*.yaml"), *CONFIGS.glob("*.yml")])
PAPER = CONFIGS / "mtdnn_bert_base_glue.yaml"


def check_train_config(path: Path) -> Config:
    """What `mtdnn train` and scripts/pipeline.py (through `load_config`) check before reading any data."""
    config = load_config(path)
    tasks = resolve_tasks(config.tasks)
    config.data.check_train_caps(tasks)
    orphans = [name for name, task in tasks.items() if task.head is not None and task.head not in tasks]
    if orphans:  # the model refuses these when it is built; a config should not get that far
        raise MTDNNError(f"task `{orphans[0]}` is predicted by the head of `{tasks[orphans[0]].head}`, "
                         f"which is not in `tasks` (in {path}).")
    return config


def check_pretrain_config(path: Path) -> PretrainConfig:
    """What `mtdnn pretrain` checks: its settings, and that the tasks whose sentences it reads are known."""
    config = load_pretrain_config(path)
    resolve_tasks(config.data.text_from_glue_tasks)
    return config


LOADERS = {"train": check_train_config, "pretrain": check_pretrain_config}
"""Every kind of config file and its check; a file must pass exactly one."""


def load_any(path: Path) -> tuple[str, Config | PretrainConfig]:
    """The kind of `path` and its settings, from the one loader that accepts it; else an error with each refusal."""
    accepted, refusals = {}, []
    for kind, check in LOADERS.items():
        try:
            accepted[kind] = check(path)
        except MTDNNError as error:
            refusals.append(f"{kind}: {error}")
    if len(accepted) != 1:
        found = f"accepted by {', '.join(accepted)}" if accepted else "refused by every loader"
        raise MTDNNError(f"{path.name} is {found}; a config file must be exactly one kind. " + " | ".join(refusals))
    return next(iter(accepted.items()))


def test_the_config_directory_is_found():
    assert PAPER in CONFIG_FILES and len(CONFIG_FILES) >= 4


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_config_file_loads_and_validates(path):
    kind, config = load_any(path)
    assert config.output_dir, f"{path.name} ({kind} config) names no output_dir"  # every command writes its run there


def test_a_file_no_loader_accepts_fails(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("tasks: [sst2]\ntrian: {epochs: 2}\n")
    with pytest.raises(MTDNNError, match="refused by every loader") as error:
        load_any(path)
    assert "unknown config key `trian`" in str(error.value) and "unknown config key `tasks`" in str(error.value)


def test_a_head_of_an_unlisted_task_fails(tmp_path):
    path = tmp_path / "orphan.yaml"
    path.write_text("tasks: [sst2, mnli_mismatched]\n")
    with pytest.raises(MTDNNError, match="head of `mnli`"):
        check_train_config(path)


def test_the_paper_config_is_the_papers_recipe():
    config = load_config(PAPER)
    tasks = resolve_tasks(config.tasks)
    trained = {name: task for name, task in tasks.items() if task.head is None}
    # all GLUE tasks with training data but WNLI (namisan/mt-dnn README); QNLI as classification (GLUE v2)
    assert sorted(trained) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
    assert tasks["mnli_mismatched"].head == "mnli"
    pairs = sorted(name for name, task in trained.items() if task.type == "pair_classification")
    assert pairs == ["mnli", "mrpc", "qnli", "qqp", "rte"]
    for name, task in trained.items():  # SAN on pair classification, K = 5, stochastic prediction dropout 0.1
        expected = ("san", 5, 0.1) if name in pairs else ("linear", 5, 0.1)
        assert (task.answer_module, task.san_steps, task.san_step_dropout) == expected, name
    # task-specific dropout 0.1, except 0.3 for MNLI and 0.05 for CoLA (paper section 4.2)
    assert {name: task.dropout for name, task in trained.items()} == {**dict.fromkeys(trained, 0.1),
                                                                      "mnli": 0.3, "cola": 0.05}
    train = config.train  # paper section 4.2
    assert (train.optimizer, train.learning_rate, train.batch_size, train.epochs) == ("adamax", 5e-5, 32, 5)
    assert (train.warmup_ratio, train.max_grad_norm, config.data.max_seq_length) == (0.1, 1.0, 512)
    assert (train.weight_decay, train.seed, train.gradient_accumulation_steps) == (0.01, 2018, 1)  # reference
    assert train.max_steps is None and config.data.max_train_samples is None and config.data.max_eval_samples is None
    assert train.sampling.strategy == "proportional"  # paper Algorithm 1
    assert train.adversarial.weight == 0 and train.distillation.soft_targets is None  # neither is in the paper
    assert config.model.name_or_path == "bert-base-uncased" and not config.model.from_scratch
    assert config.model.sharing == "hard" and not config.model.task_embeddings
