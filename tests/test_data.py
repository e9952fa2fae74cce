"""Tokenisation, caching and per-batch padding."""

import torch

from mtdnn.config import DataSettings
from mtdnn.data import load_task_data
from mtdnn.token_cache import cache_root
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import TaskSpec


def test_pairs_are_cls_a_sep_b_sep_and_padded_per_batch(tiny_model_dir, task_files, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    settings = DataSettings(max_seq_length=16, cache_dir=str(tmp_path))
    data = load_task_data(TaskSpec.from_dict(task_files["pair"]), "train", tokenizer, settings)
    first = data.input_ids[0]
    assert first[0] == tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    assert first.tolist().count(tokenizer.sep_token_id) == 2 and len(first) <= 16
    assert data.token_type_ids[0][-1] == 1 and data.token_type_ids[0][0] == 0
    indices = [0, 1, 2, 3]
    batch = data.collate(indices)
    longest = max(len(data.input_ids[i]) for i in indices)
    assert batch["input_ids"].shape == (4, longest)  # padded to the batch, not to max_seq_length
    assert batch["attention_mask"].sum().item() == sum(len(data.input_ids[i]) for i in indices)
    assert batch["labels"].dtype == torch.long


def test_tokenised_split_is_cached_and_reused(tiny_model_dir, task_files, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    settings = DataSettings(max_seq_length=16, cache_dir=str(tmp_path))
    task = TaskSpec.from_dict(task_files["single"])
    first = load_task_data(task, "train", tokenizer, settings, max_samples=10)
    cached = entries(cache_root(settings))
    assert len(cached) == 1 and len(first) == 10
    again = load_task_data(task, "train", tokenizer, settings, max_samples=10)
    assert again.input_ids.tolist() == first.input_ids.tolist() and entries(cache_root(settings)) == cached
    load_task_data(task, "train", tokenizer, DataSettings(max_seq_length=8, cache_dir=str(tmp_path)), max_samples=10)
    assert len(entries(cache_root(settings))) == 2  # another length is another cache entry


def entries(root):
    """A cache's entries, without the hidden lock files beside them; a staging directory left behind fails."""
    hidden = [path.name for path in root.iterdir() if path.name.startswith(".")]
    assert all(name.endswith(".lock") for name in hidden), hidden
    return sorted(path for path in root.iterdir() if not path.name.startswith("."))


def test_ranking_batches_are_query_by_candidate(tiny_model_dir, task_files, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = load_task_data(TaskSpec.from_dict(task_files["rank"]), "dev", tokenizer,
                          DataSettings(max_seq_length=32, cache_dir=str(tmp_path)))
    batch = data.collate([0, 1])
    assert batch["input_ids"].shape[:2] == (2, 3) and batch["candidate_mask"].all()
    assert batch["labels"].tolist() == data.labels[:2].tolist()


def test_the_cache_key_names_the_file_read_in_the_diagnostic_layout(tiny_model_dir, tmp_path):
    """AX read from `diagnostic/diagnostic.tsv`: two GLUE directories with different files give different data."""
    from mtdnn.tasks import GLUE_TASKS

    tokenizer = load_tokenizer(str(tiny_model_dir))
    indices = []
    for name, rows in (("one", [0]), ("two", [5, 6])):
        (tmp_path / name / "diagnostic").mkdir(parents=True)
        (tmp_path / name / "diagnostic" / "diagnostic.tsv").write_text(
            "index\tsentence1\tsentence2\n" + "".join(f"{i}\tthe dog\tthe cat\n" for i in rows))
        settings = DataSettings(glue_dir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"))
        indices.append(list(load_task_data(GLUE_TASKS["ax"], "test", tokenizer, settings).idx))
    assert indices == [[0], [5, 6]]


def test_a_cached_split_is_flat_arrays_mapped_from_disk_not_python_lists(tiny_model_dir, task_files, tmp_path):
    import numpy as np

    tokenizer = load_tokenizer(str(tiny_model_dir))
    settings = DataSettings(max_seq_length=16, cache_dir=str(tmp_path))
    load_task_data(TaskSpec.from_dict(task_files["pair"]), "train", tokenizer, settings)  # cold: tokenises
    data = load_task_data(TaskSpec.from_dict(task_files["pair"]), "train", tokenizer, settings)  # warm: maps
    for array in (data.idx, data.input_ids.values, data.input_ids.offsets, data.token_type_ids.values, data.labels):
        assert isinstance(array, np.memmap)
    assert data.input_ids.values.dtype == np.int32 and data.token_type_ids.values.dtype == np.int8
    assert len(data.input_ids.offsets) == len(data) + 1 == 65
    assert data.lengths().sum() == data.input_ids.offsets[-1]
    assert data.input_ids[0][0] == tokenizer.cls_token_id


def test_ranking_groups_of_different_sizes_pad_with_masked_stand_ins(tiny_model_dir):
    import numpy as np

    from mtdnn.data import TaskData

    task = TaskSpec(name="r", type="ranking", text_columns=("q", "a"))
    groups = [[[2, 10, 3, 11, 3]], [[2, 12, 3, 13, 14, 3], [2, 12, 3, 15, 3], [2, 12, 3, 16, 17, 18, 3]]]
    types = [[[0] * 3 + [1] * (len(ids) - 3) for ids in group] for group in groups]
    data = TaskData.from_lists(task, "dev", [7, 9], groups, types, [0, 2], pad_token_id=0)
    assert data.lengths().tolist() == [5, 3 * 7]  # candidates x longest candidate
    batch = data.collate([0, 1])
    assert batch["input_ids"].shape == (2, 3, 7) and batch["candidate_mask"].tolist() == [[True, False, False],
                                                                                          [True, True, True]]
    assert batch["input_ids"][0, 1].tolist() == [2, 10, 0, 0, 0, 0, 0]  # stand-in: 2 tokens of the first candidate
    assert batch["attention_mask"][1, 2].sum() == 7 and batch["labels"].tolist() == [0, 2]
    assert batch["token_type_ids"][1, 0].tolist() == [0, 0, 0, 1, 1, 1, 0]
    np.testing.assert_array_equal(data.idx, [7, 9])


def test_multi_label_rows_are_cached_as_a_matrix(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    (tmp_path / "tags.jsonl").write_text('{"text": "the dog", "tags": ["a", "c"]}\n{"text": "a cat", "tags": []}\n')
    task = TaskSpec(name="tags", type="multi_label_classification", text_columns=("text",), label_column="tags",
                    label_names=("a", "b", "c"), data_files={"train": str(tmp_path / "tags.jsonl")})
    data = load_task_data(task, "train", tokenizer, DataSettings(max_seq_length=16, cache_dir=str(tmp_path / "c")))
    assert data.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert data.collate([1, 0])["labels"].tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]


CONCURRENT_READER = '''
import contextlib, json, logging, sys, time
from pathlib import Path

import mtdnn.token_cache as token_cache
from mtdnn.config import DataSettings
from mtdnn.data import load_task_data
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import TaskSpec

model, task, cache, mine, theirs = sys.argv[1:]
building, read = token_cache._building, token_cache.load_split


@contextlib.contextmanager
def meet_then_build(path):  # both processes are past the "is it cached?" check before either takes the lock
    Path(mine).touch()
    deadline = time.monotonic() + 120
    while not Path(theirs).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with building(path):
        yield


def reading(*args, **kwargs):
    print("reading the source", file=sys.stderr)
    return read(*args, **kwargs)


token_cache._building, token_cache.load_split = meet_then_build, reading
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
data = load_task_data(TaskSpec.from_dict(json.loads(task)), "train", load_tokenizer(model),
                      DataSettings(max_seq_length=16, cache_dir=cache))
print(json.dumps(data.input_ids.tolist()))
'''


def test_processes_asking_for_the_same_cold_split_at_once_tokenise_it_once(tiny_model_dir, task_files, tmp_path):
    """Two experiment jobs side by side used to tokenise the same split both, and the second to publish its entry
    by deleting the first's under the first's reader (KeyError 'offsets'); now one builds, the other waits for
    its lock and maps what it wrote."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "reader.py"
    script.write_text(CONCURRENT_READER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    readers = [subprocess.Popen([sys.executable, str(script), str(tiny_model_dir), json.dumps(task_files["pair"]),
                                 str(tmp_path / "cache"), str(tmp_path / mine), str(tmp_path / theirs)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for mine, theirs in (("a", "b"), ("b", "a"))]
    outputs = [reader.communicate(timeout=300) for reader in readers]
    assert [reader.returncode for reader in readers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    tokenised = [line for _, stderr in outputs for line in stderr.splitlines()
                 if line.startswith("mtdnn.token_cache: tokenising pair train")]
    assert len(tokenised) == 1, tokenised
    assert sum(stderr.count("reading the source") for _, stderr in outputs) == 1  # the other waited, then mapped
    assert json.loads(outputs[0][0]) == json.loads(outputs[1][0]) and len(json.loads(outputs[0][0])) == 64
    assert len(entries(tmp_path / "cache")) == 1


def test_a_file_system_without_locks_still_caches(tiny_model_dir, task_files, tmp_path, monkeypatch, caplog):
    import errno

    import mtdnn.token_cache as token_cache

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(token_cache.fcntl, "flock", no_locks)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    settings = DataSettings(max_seq_length=16, cache_dir=str(tmp_path))
    with caplog.at_level("WARNING", logger="mtdnn.token_cache"):
        data = load_task_data(TaskSpec.from_dict(task_files["single"]), "train", tokenizer, settings)
    assert len(data) == 64 and "without a lock (" in caplog.text and len(entries(tmp_path)) == 1


def test_publishing_keeps_a_complete_entry_and_replaces_an_incomplete_one(tmp_path):
    from mtdnn.token_cache import DONE, _publish

    def staged(name: str, marker: str):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "input_ids.npy").write_text(marker)
        (directory / DONE).write_text("{}")
        return directory

    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "input_ids.npy").write_text("half")  # no DONE: a build that never finished
    _publish(staged(".a", "first"), entry)
    assert (entry / "input_ids.npy").read_text() == "first"
    _publish(staged(".b", "second"), entry)  # complete already (another process published first): kept
    assert (entry / "input_ids.npy").read_text() == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".b", "entry"]  # `_build` removes its own staging
