"""Config loading: defaults, overrides, and errors that name the key."""

from pathlib import Path

import pytest

from mtdnn.config import load_config
from mtdnn.errors import MTDNNError

REPO = Path(__file__).resolve().parents[1]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks: [sst2]\ntrain: {learning_rate: 3e-5, epochs: 2}\n")
    config = load_config(path, ["train.max_steps=20", "output_dir=/tmp/x", "data.max_train_samples=null"])
    assert config.tasks == ["sst2"] and config.train.learning_rate == 3e-5 and config.train.epochs == 2
    assert config.train.max_steps == 20 and config.output_dir == "/tmp/x"
    assert config.train.batch_size == 32  # default kept


@pytest.mark.parametrize("text, message", [
    ("train: {learning_rat: 1.0e-4}", "unknown config key `train.learning_rat`"),
    ("trian: {}", "unknown config key `trian`"),
    ("train: {epochs: three}", "`train.epochs` must be of type int"),
    ("train: {optimizer: sgd}", "`train.optimizer` must be one of"),
    ("train: {batch_size: 0}", "train.batch_size must be at least 1"),
    ("tasks: []", "`tasks` is empty"),
    ("[1, 2]", "must hold a mapping"),
    ("data: {max_train_samples: {cola: many}}", "`data.max_train_samples.cola` must be of type int"),
    ("data: {max_train_samples: {cola: 0}}", "`data.max_train_samples.cola` must be a positive integer"),
])
def test_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MTDNNError, match=message.replace("(", r"\(")) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_override_errors():
    with pytest.raises(MTDNNError, match="key=value"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(MTDNNError, match="unknown config key `train.max_step`"):
        load_config(None, ["train.max_step=3"])


def test_per_task_training_caps(tmp_path):
    config = load_config(None, ["tasks=[cola,rte]", "data.max_train_samples={cola: 300}"])
    assert config.data.train_cap("cola") == 300 and config.data.train_cap("rte") is None
    config.data.check_train_caps(["cola", "rte"])
    with pytest.raises(MTDNNError, match="`data.max_train_samples.stt2` names no task of this run nor a GLUE task"):
        load_config(None, ["data.max_train_samples={stt2: 5}"]).data.check_train_caps(["cola", "rte"])
    assert load_config(None, ["data.max_train_samples=7"]).data.train_cap("rte") == 7
    path = tmp_path / "c.yaml"
    path.write_text("data: {max_train_samples: null}\n")  # a saved config.yaml has the key, as null
    assert load_config(path, ["data.max_train_samples.cola=300"]).data.max_train_samples == {"cola": 300}


def test_a_cap_for_a_glue_task_left_out_of_the_run_is_ignored(caplog):
    """Narrowing the quickstart's tasks (`--set "tasks=[rte]"`) keeps its caps for the tasks left out valid."""
    config = load_config(REPO / "configs" / "quickstart.yaml", ["tasks=[rte]"])
    with caplog.at_level("INFO", logger="mtdnn.config"):
        config.data.check_train_caps(["rte"])
    assert "ignoring the caps of" in caplog.text and "mrpc" in caplog.text
    assert config.data.train_cap("rte") is None
