"""A checkpoint's manifest (every file with its size and sha256), and reading a checkpoint's files so that a
missing, changed or malformed one is an MTDNNError naming it: a checkpoint is loaded whole or refused."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from pathlib import Path

from mtdnn.errors import MTDNNError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "mtdnn_manifest.json"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 22  # hashing reads 4 MiB at a time: a BERT-base weights file never sits in memory twice

REFUSAL_HINT = ("Copy the checkpoint again from its source, or use another checkpoint of the run "
                "(`last/`, `best/` or `checkpoints/step-N/`).")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, reuse_entries: bool = False) -> None:
    """List every file of `directory` with its size and sha256. With `reuse_entries`, a file the manifest already
    lists at the same size keeps its entry: within one save, each file is hashed once by whoever wrote it."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    listed = json.loads(path.read_text())["files"] if reuse_entries and path.is_file() else {}
    files = {}
    for file in sorted(directory.iterdir()):
        if file.is_file() and file.name != MANIFEST_FILE:
            size = file.stat().st_size
            entry = listed.get(file.name)
            files[file.name] = entry if entry and entry["size"] == size else {"size": size, "sha256": sha256_of(file)}
    path.write_text(json.dumps({"format_version": FORMAT_VERSION, "files": files}, indent=2))


def read_manifest(directory: Path) -> dict[str, dict] | None:
    """File name -> {size, sha256} of a checkpoint's manifest; None where there is none (an older mtdnn's)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = read_json(path)
    files = manifest.get("files")
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(files, dict) or not all(
            _is_plain_name(name) and isinstance(entry, dict) and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str) for name, entry in files.items()):
        raise MTDNNError(f"the checkpoint manifest {path} is not one this mtdnn wrote (format version "
                         f"{FORMAT_VERSION}: `files` maps each file name to its size and sha256). {REFUSAL_HINT}")
    return files


def _is_plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def verify_files(directory: Path, required: Collection[str], listed_too: bool = False,
                 skip: Collection[str] = (), warn_unverified: bool = True) -> None:
    """Refuse a checkpoint unless each `required` file (and, with `listed_too`, every other file its manifest
    lists but those in `skip`) is present with the size and sha256 the manifest gives. Without a manifest the
    `required` files must be present; their contents cannot be verified (a warning says so)."""
    directory = Path(directory)
    files = read_manifest(directory)
    if files is None:
        _require_present(directory, required)
        if warn_unverified:
            logger.warning("%s has no %s (an older mtdnn wrote it): its files cannot be verified against the "
                           "sizes and hashes they were saved with.", directory, MANIFEST_FILE)
        return
    unlisted = [name for name in required if name not in files]
    if unlisted:
        raise MTDNNError(f"the checkpoint manifest {directory / MANIFEST_FILE} does not list {unlisted[0]}, which "
                         f"every checkpoint holds: the manifest is not the one saved with it. {REFUSAL_HINT}")
    names = [*required, *(name for name in files if listed_too and name not in required and name not in skip)]
    _require_present(directory, names)
    for name in names:
        path, entry = directory / name, files[name]
        if path.stat().st_size != entry["size"]:
            raise MTDNNError(f"{path} has {path.stat().st_size} bytes, but {entry['size']} were saved (per "
                             f"{MANIFEST_FILE}): the file is truncated or was changed. {REFUSAL_HINT}")
        if sha256_of(path) != entry["sha256"]:
            raise MTDNNError(f"{path} has changed since it was saved: its sha256 differs from the one in "
                             f"{MANIFEST_FILE}. {REFUSAL_HINT}")


def _require_present(directory: Path, names: Collection[str]) -> None:
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise MTDNNError(f"{directory} is not a complete mtdnn checkpoint: {', '.join(missing)} missing. "
                         f"{REFUSAL_HINT}")


def read_json(path: Path, kind: type = dict):
    """The JSON value of a checkpoint file, which must be a `kind`; otherwise an MTDNNError naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MTDNNError(f"{path} is not valid JSON ({error}); the checkpoint is damaged. {REFUSAL_HINT}") from None
    if not isinstance(value, kind):
        raise MTDNNError(f"{path} must hold a JSON {'object' if kind is dict else kind.__name__}, not "
                         f"{type(value).__name__}; the checkpoint is damaged. {REFUSAL_HINT}")
    return value
