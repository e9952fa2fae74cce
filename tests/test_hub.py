"""The hub without the network: a hub id loads through a (monkeypatched) snapshot_download, `mtdnn push` is checked
up to the upload (HfApi's methods record what would be sent), and offline or unreachable hubs are clear errors."""

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.utils import filter_repo_objects

from mtdnn import hub
from mtdnn.checkpoint import CARD_FILE
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.inference import Predictor
from mtdnn.manifest import MANIFEST_FILE
from mtdnn.model import MTDNNModel


@pytest.fixture
def downloads(monkeypatch):
    """snapshot_download answered from local directories: repo id -> directory; records each call."""
    repos, calls = {}, []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(repos[repo_id])

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    return repos, calls


def test_from_pretrained_reads_a_hub_id(tiny_checkpoint, downloads):
    repos, calls = downloads
    repos["someone/tiny-mtdnn"] = tiny_checkpoint
    model = MTDNNModel.from_pretrained("someone/tiny-mtdnn")
    assert set(model.tasks) == {"single", "pair", "score", "rank"}
    assert calls == [("someone/tiny-mtdnn", {"ignore_patterns": ["training_state.pt"]})]
    texts = ["a good movie", "the plot was dull"]
    local = Predictor.from_pretrained(tiny_checkpoint, device="cpu").logits("single", texts)
    from_hub = Predictor.from_pretrained("someone/tiny-mtdnn", device="cpu").logits("single", texts)
    assert (local == from_hub).all()


def test_a_local_directory_never_asks_the_hub(tiny_checkpoint, tmp_path, downloads):
    _, calls = downloads
    MTDNNModel.from_pretrained(tiny_checkpoint)
    MTDNNModel.from_pretrained(str(tiny_checkpoint))
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    (copy / "mtdnn_tasks.json").unlink()
    with pytest.raises(MTDNNError, match="is not a complete mtdnn checkpoint: mtdnn_tasks.json missing"):
        MTDNNModel.from_pretrained(copy)  # the manifest checks as before
    with pytest.raises(MTDNNError, match="not a complete mtdnn checkpoint"):
        MTDNNModel.from_pretrained(tmp_path / "no" / "such" / "dir")  # no hub id: a missing directory, as before
    assert calls == []


def test_a_hub_repository_that_is_no_checkpoint_is_named(tiny_model_dir, downloads):
    downloads[0]["someone/plain-bert"] = tiny_model_dir
    with pytest.raises(MTDNNError, match="`someone/plain-bert` is not an mtdnn checkpoint .*no mtdnn_tasks.json"):
        MTDNNModel.from_pretrained("someone/plain-bert")


def test_finetune_starts_from_a_hub_id_and_writes_beside_the_caller(tiny_checkpoint, downloads, tmp_path,
                                                                     monkeypatch, capsys):
    """`mtdnn finetune USER/REPO`: the config is read from the snapshot (it was read from the id as a path), and
    stage 3 writes to REPO/finetune/TASK in the current directory, never into the hub cache's snapshot."""
    repos, calls = downloads
    repos["someone/tiny-mtdnn"] = snapshot = shutil.copytree(tiny_checkpoint, tmp_path / "hub-cache" / "snapshot")
    before = sorted(path.relative_to(snapshot) for path in snapshot.rglob("*"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert main(["finetune", "someone/tiny-mtdnn", "--task", "single", "--set", "train.max_steps=2"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert (tmp_path / "work" / "tiny-mtdnn" / "finetune" / "single" / "best" / "mtdnn_config.yaml").is_file()
    assert sorted(path.relative_to(snapshot) for path in snapshot.rglob("*")) == before  # nothing written there
    assert [repo for repo, _ in calls] == ["someone/tiny-mtdnn"] and snapshot.is_dir()


def test_offline_hub_id_is_a_clear_error_naming_it(capsys):
    """The real snapshot_download under HF_HUB_OFFLINE=1 (the tests' setting) with nothing cached."""
    with pytest.raises(MTDNNError, match="cannot load `someone/never-cached`: it is not a local directory, and "
                                         "HF_HUB_OFFLINE is set"):
        MTDNNModel.from_pretrained("someone/never-cached")
    assert main(["predict", "someone/never-cached", "--task", "single", "--input", "-"]) == 2
    error = capsys.readouterr().err
    assert "`someone/never-cached`" in error and "Traceback" not in error


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(repo_id, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(hub, "snapshot_download", unreachable)
    with pytest.raises(MTDNNError, match="`someone/x`.*hub did not provide it \\(ConnectionError: Name or service"):
        MTDNNModel.from_pretrained("someone/x")


# --- mtdnn push


@pytest.fixture
def uploads(monkeypatch):
    """Online with a token, and HfApi's create_repo/upload_folder recording what would be sent: the files are
    chosen as huggingface_hub chooses them from the folder and patterns, while the folder exists."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    sent = []

    def create_repo(self, repo_id, **kwargs):
        sent.append({"create_repo": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        names = sorted(path.name for path in folder.iterdir() if path.is_file())
        files = list(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        cards = ModelCard.load(folder / CARD_FILE).data.to_dict() if CARD_FILE in files else None
        sent.append({"upload_folder": repo_id, "files": files, "card": cards})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return sent


@pytest.fixture
def run_checkpoint(tiny_checkpoint, tmp_path):
    """A checkpoint as a run leaves it: optimizer state and, beside it, the run's lock."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "run" / "checkpoints" / "step-3")
    (checkpoint / "training_state.pt").write_bytes(b"optimizer state")
    (checkpoint / ".mtdnn-run.lock").write_text("")
    return checkpoint


def test_push_uploads_the_checkpoint_without_its_training_state(run_checkpoint, uploads, capsys):
    assert main(["push", str(run_checkpoint), "me/tiny-mtdnn"]) == 0
    created, uploaded = uploads
    assert created == {"create_repo": "me/tiny-mtdnn", "private": None, "exist_ok": True}
    expected = {path.name for path in run_checkpoint.iterdir()} - {"training_state.pt", ".mtdnn-run.lock"}
    assert set(uploaded["files"]) == expected >= {"model.safetensors", "mtdnn_tasks.json", "mtdnn_config.yaml",
                                                 "tokenizer.json", CARD_FILE, MANIFEST_FILE}
    assert uploaded["upload_folder"] == "me/tiny-mtdnn" and uploaded["card"]["library_name"] == "mtdnn"
    printed = json.loads(capsys.readouterr().out)
    assert printed["url"] == "https://huggingface.co/me/tiny-mtdnn" and set(printed["files"]) == expected


def test_push_of_a_task_uploads_its_export_privately(tiny_checkpoint, uploads):
    assert main(["push", str(tiny_checkpoint), "me/tiny-single", "--task", "single", "--private"]) == 0
    created, uploaded = uploads
    assert created["private"] is True and uploaded["upload_folder"] == "me/tiny-single"
    assert {"config.json", "model.safetensors", "tokenizer.json", CARD_FILE} <= set(uploaded["files"])
    assert "mtdnn_tasks.json" not in uploaded["files"]  # a transformers model, not a checkpoint
    assert uploaded["card"]["library_name"] == "transformers"


def test_push_refuses_a_damaged_checkpoint_before_uploading(run_checkpoint, uploads, capsys):
    (run_checkpoint / "tokenizer.json").write_text("{}")
    assert main(["push", str(run_checkpoint), "me/tiny-mtdnn"]) == 2
    assert "tokenizer.json" in capsys.readouterr().err and uploads == []


@pytest.mark.parametrize("arguments", [[], ["--task", "single"]])
def test_push_offline_is_one_clear_error(tiny_checkpoint, monkeypatch, capsys, arguments):
    sent = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: sent.append(a))
    assert main(["push", str(tiny_checkpoint), "me/tiny-mtdnn", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mtdnn: error: cannot push to `me/tiny-mtdnn`: HF_HUB_OFFLINE is set")
    assert "nothing was uploaded" in error and "Traceback" not in error and len(error.splitlines()) == 1
    assert sent == []


def test_push_without_network_is_one_clear_error(tiny_checkpoint, monkeypatch, capsys):
    """Online mode, but the hub's address refuses connections: the real create_repo fails."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert main(["push", str(tiny_checkpoint), "me/tiny-mtdnn"]) == 2
    error = capsys.readouterr().err
    assert "cannot push to `me/tiny-mtdnn`: the Hugging Face hub refused or could not be reached" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("repo_id, message", [
    ("not/a/repo", "REPO_ID `not/a/repo` is not a hub repository id"),
    ("me/tiny", "cannot push to `me/tiny`: no Hugging Face token is set; log in with `hf auth login`"),
])
def test_push_refuses_what_cannot_succeed(tiny_checkpoint, monkeypatch, tmp_path, capsys, repo_id, message):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    sent = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: sent.append(a))
    assert main(["push", str(tiny_checkpoint), repo_id]) == 2
    assert message in capsys.readouterr().err and sent == []


def test_push_needs_a_local_checkpoint(tmp_path, uploads, capsys):
    assert main(["push", str(tmp_path / "missing"), "me/tiny"]) == 2
    assert f"checkpoint directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
