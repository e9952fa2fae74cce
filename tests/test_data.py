"""Tokenisation, caching and per-batch padding."""

import torch

from mtdnn.config import DataSettings
from mtdnn.data import cache_root, load_task_data
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import TaskSpec


def test_pairs_are_cls_a_sep_b_sep_and_padded_per_batch(tiny_model_dir, task_files, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    settings = DataSettings(max_seq_length=16, cache_dir=str(tmp_path))
    data = load_task_data(TaskSpec.from_dict(task_files["pair"]), "train", tokenizer, settings)
    first = data.input_ids[0]
    assert first[0] == tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    assert first.count(tokenizer.sep_token_id) == 2 and len(first) <= 16
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
    cached = list(cache_root(settings).iterdir())
    assert len(cached) == 1 and len(first) == 10
    again = load_task_data(task, "train", tokenizer, settings, max_samples=10)
    assert again.input_ids == first.input_ids and list(cache_root(settings).iterdir()) == cached
    load_task_data(task, "train", tokenizer, DataSettings(max_seq_length=8, cache_dir=str(tmp_path)), max_samples=10)
    assert len(list(cache_root(settings).iterdir())) == 2  # another length is another cache entry


def test_ranking_batches_are_query_by_candidate(tiny_model_dir, task_files, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = load_task_data(TaskSpec.from_dict(task_files["rank"]), "dev", tokenizer,
                          DataSettings(max_seq_length=32, cache_dir=str(tmp_path)))
    batch = data.collate([0, 1])
    assert batch["input_ids"].shape[:2] == (2, 3) and batch["candidate_mask"].all()
    assert batch["labels"].tolist() == data.labels[:2]


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
