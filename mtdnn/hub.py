"""mtdnn's models on the Hugging Face hub: a hub id read as a local snapshot, and a directory uploaded as a model
repository. huggingface_hub does the work (cache, offline mode, tokens, uploads); this module names its failures."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi, get_token, is_offline_mode, snapshot_download
from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from mtdnn.errors import MTDNNError

logger = logging.getLogger(__name__)

LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


def is_hub_id(name: str) -> bool:
    """Whether `name` has the form of a hub repository id (`name` or `user/name`)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def local_checkpoint(name_or_path: str | Path, marker: str, skip: tuple[str, ...] = ()) -> Path:
    """`name_or_path` itself where it exists or cannot be a hub id (a local path keeps every check of its own);
    else the snapshot of that hub repository, which must hold `marker` (files in `skip` are not downloaded)."""
    path = Path(name_or_path)
    if path.exists() or not is_hub_id(str(name_or_path)):
        return path
    repo_id = str(name_or_path)
    try:  # offline (HF_HUB_OFFLINE=1, or no network), the cached snapshot if there is one
        snapshot = Path(snapshot_download(repo_id, ignore_patterns=list(skip) or None))
    except Exception as error:  # noqa: BLE001 - huggingface_hub raises HTTP, transport and cache errors alike
        raise MTDNNError(f"cannot load `{repo_id}`: it is not a local directory, and {_why_not(error)}") from error
    if not (snapshot / marker).is_file():
        raise MTDNNError(f"the hub repository `{repo_id}` is not an mtdnn checkpoint (it has no {marker}). mtdnn loads "
                         "repositories written by `mtdnn push CHECKPOINT REPO_ID`; a transformers model (an export, or "
                         "an encoder to start from) loads with transformers, or as `model.name_or_path`.")
    return snapshot


def _why_not(error: Exception) -> str:
    """Why the hub did not provide a repository, and what to do: one sentence ending the caller's message."""
    if is_offline_mode():
        return ("HF_HUB_OFFLINE is set and the hub cache holds no copy of it. Unset HF_HUB_OFFLINE where "
                "huggingface.co is reachable (it is then cached for offline use), or give a local checkpoint "
                "directory.")
    if isinstance(error, (RepositoryNotFoundError, GatedRepoError)):
        return (f"the hub has no model repository of that id that you may read. Check the id (`user/name`); for a "
                f"private or gated repository, {LOGIN_HINT}.")
    return (f"the Hugging Face hub did not provide it ({type(error).__name__}: {_first_line(error)}). Check the "
            f"network connection (or proxy) and, for a private repository, {LOGIN_HINT}; or give a local checkpoint "
            "directory.")


def check_upload(repo_id: str) -> None:
    """Refuse an upload that cannot succeed before any work is done: a malformed id, offline mode, no token."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise MTDNNError(f"REPO_ID `{repo_id}` is not a hub repository id; give `user/name` or `org/name` (letters, "
                         "digits, `-`, `_` and `.`).") from None
    if is_offline_mode():
        raise MTDNNError(f"cannot push to `{repo_id}`: HF_HUB_OFFLINE is set, so nothing may be sent to the Hugging "
                         "Face hub. Unset HF_HUB_OFFLINE on a machine that reaches huggingface.co and run the command "
                         "again; nothing was uploaded.")
    if get_token() is None:
        raise MTDNNError(f"cannot push to `{repo_id}`: no Hugging Face token is set; {LOGIN_HINT} (a token with write "
                         "access), then run the command again. Nothing was uploaded.")


def upload(folder: Path, repo_id: str, files: list[str], private: bool) -> str:
    """Upload `files` (names in `folder`) to the model repository `repo_id`, created if it does not exist (private
    with `private`; an existing one keeps its visibility). Returns the repository's URL."""
    check_upload(repo_id)
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files,
                          commit_message=f"Upload {folder.name} with mtdnn push")
    except Exception as error:  # noqa: BLE001 - huggingface_hub raises HTTP, transport and validation errors alike
        raise MTDNNError(f"cannot push to `{repo_id}`: the Hugging Face hub refused or could not be reached "
                         f"({type(error).__name__}: {_first_line(error)}). Check the network connection, that the "
                         f"repository is yours or your organisation's and that your token may write ({LOGIN_HINT}); "
                         "then run the command again, which uploads the files whole.") from error
    logger.info("pushed %d files of %s to %s", len(files), folder, url)
    return str(url)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""
