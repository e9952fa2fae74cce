"""Shared fixtures: an offline environment, a tiny random BERT with its tokenizer, small task files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

WORDS = ("the a good bad movie film great awful plot is was not very and it this of to film story fun dull "
         "man dog cat").split()
REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("GLUE_DIR") or REPO.parent / "shared" / "data" / "glue")


def pytest_configure(config):
    """No test reaches the hub or writes caches under ~ (set before any fixture, module-scoped ones too)."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="mtdnn-tests-"))
    config.mtdnn_home = home
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home / "hf"),
                       "MTDNN_CACHE": str(home / "mtdnn")})


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(getattr(config, "mtdnn_home", ""), ignore_errors=True)


def build_vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    vocab += [str(d) for d in range(10)] + list(".,'!?-")
    vocab += [w for w in dict.fromkeys(WORDS) if w not in vocab]
    return vocab[:99]


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=128)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A directory holding a random tiny BERT and its WordPiece tokenizer, loadable like a hub model."""
    import torch
    from transformers import BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = {token: i for i, token in enumerate(build_vocab())}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(directory)
    return directory


def _sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


@pytest.fixture(scope="session")
def task_files(tmp_path_factory) -> dict[str, dict]:
    """Small own tasks of all four types as files, with a learnable signal; returns task mappings."""
    directory = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    tasks = {}
    for split, size in (("train", 64), ("dev", 24)):
        single = [{"text": _sentence(rng, rng.randint(2, 9)), "label": ""} for _ in range(size)]
        for row in single:
            row["label"] = "pos" if "good" in row["text"] or "great" in row["text"] else "neg"
        with open(directory / f"single_{split}.tsv", "w") as handle:
            handle.write("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in single))
        pairs = [(_sentence(rng, rng.randint(2, 8)), _sentence(rng, rng.randint(2, 8))) for _ in range(size)]
        with open(directory / f"pair_{split}.jsonl", "w") as handle:
            for a, b in pairs:
                label = "same" if a.split()[0] == b.split()[0] else "different"
                handle.write(json.dumps({"first": a, "second": b, "label": label}) + "\n")
        with open(directory / f"score_{split}.csv", "w") as handle:
            handle.write("first,second,score\n")
            for a, b in pairs:
                handle.write(f"{a},{b},{len(set(a.split()) & set(b.split())) / 2:.2f}\n")
        with open(directory / f"rank_{split}.jsonl", "w") as handle:
            for q in range(size // 4):
                query = _sentence(rng, 3)
                positive = rng.randrange(3)
                for c in range(3):
                    answer = query + " " + _sentence(rng, 2) if c == positive else _sentence(rng, 5)
                    handle.write(json.dumps({"question": query, "answer": answer, "label": int(c == positive)}) + "\n")
    files = lambda stem, ext: {s: str(directory / f"{stem}_{s}.{ext}") for s in ("train", "dev")}  # noqa: E731
    tasks["single"] = {"name": "single", "type": "single_classification", "text_columns": ["text"],
                       "label_names": ["neg", "pos"], "data_files": files("single", "tsv")}
    tasks["pair"] = {"name": "pair", "type": "pair_classification", "text_columns": ["first", "second"],
                     "label_names": ["different", "same"], "metrics": ["accuracy", "f1"],
                     "data_files": files("pair", "jsonl")}
    tasks["score"] = {"name": "score", "type": "regression", "text_columns": ["first", "second"],
                      "label_column": "score", "metrics": ["pearson", "spearmanr"], "data_files": files("score", "csv")}
    tasks["rank"] = {"name": "rank", "type": "ranking", "text_columns": ["question", "answer"],
                     "data_files": files("rank", "jsonl")}
    return tasks


def needs_glue(*relative: str):
    """Skip a test when the GLUE files it reads are absent."""
    missing = [name for name in relative if not (GLUE_DIR / name).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"GLUE data absent: {GLUE_DIR}/{missing[0] if missing else ''}")


def make_checkpoint(directory: Path, model_dir: Path, tasks: list, max_seq_length: int = 32,
                    data: dict | None = None) -> Path:
    """An untrained mtdnn checkpoint (random heads) on the model in `model_dir`: fast, and enough to test
    everything downstream of training (predict, submission files, export)."""
    import torch

    from mtdnn.checkpoint import save_checkpoint
    from mtdnn.config import build_settings, Config
    from mtdnn.model import MTDNNModel
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks

    config = build_settings(Config, {"model": {"name_or_path": str(model_dir)}, "tasks": tasks,
                                     "data": {"max_seq_length": max_seq_length, **(data or {})},
                                     "output_dir": str(directory)})
    torch.manual_seed(0)
    model = MTDNNModel.from_encoder(str(model_dir), resolve_tasks(config.tasks))
    save_checkpoint(directory / "best", model, load_tokenizer(str(model_dir)), config, {"step": 0})
    return directory / "best"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model_dir, task_files, tmp_path_factory) -> Path:
    """An untrained checkpoint of the tiny BERT with heads for the four own tasks."""
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint"), tiny_model_dir, list(task_files.values()))


def write_train_config(directory: Path, model_dir: Path, tasks: list, **train) -> Path:
    """A training config of the tiny BERT on `tasks` (max length 32, batch 8), with `train` settings added."""
    import yaml

    config = {"model": {"name_or_path": str(model_dir)}, "tasks": tasks, "data": {"max_seq_length": 32},
              "train": {"batch_size": 8, **train}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
