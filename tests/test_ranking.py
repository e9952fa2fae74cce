"""Relevance ranking on real data: QNLI grouped by question (`qnli_ranking`), and the grouped jsonl format."""

import csv
import json
import random

import pytest
import yaml

from conftest import GLUE_DIR, needs_glue
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.sources import load_split
from mtdnn.tasks import GLUE_TASKS, TaskSpec


@needs_glue("QNLI/dev.tsv")
def test_qnli_ranking_groups_the_v2_rows_by_question():
    columns = load_split(GLUE_TASKS["qnli_ranking"], "dev", GLUE_DIR)
    with open(GLUE_DIR / "QNLI" / "dev.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(columns["idx"]) == 1362  # questions with one answer sentence among 2+ candidates
    assert all(len(group) >= 2 for group in columns["candidates"])
    by_question = {}
    for row in rows:
        by_question.setdefault(row["question"], []).append(row)
    for query, candidates, label in zip(columns["text_a"], columns["candidates"], columns["label"]):
        group = by_question[query]
        assert candidates == [row["sentence"] for row in group]
        assert group[label]["label"] == "entailment"
        assert sum(row["label"] == "entailment" for row in group) == 1


def test_grouped_jsonl_format_reads_like_one_row_per_candidate(tmp_path):
    grouped, flat = tmp_path / "grouped.jsonl", tmp_path / "flat.jsonl"
    queries = [("who wrote it", ["a dog", "she wrote it", "the cat"], 1), ("when", ["now", "later"], 0)]
    grouped.write_text("".join(json.dumps({"question": q, "answer": c, "label": p}) + "\n" for q, c, p in queries))
    flat.write_text("".join(json.dumps({"question": q, "answer": a, "label": int(i == p), "idx": n}) + "\n"
                            for n, (q, c, p) in enumerate(queries) for i, a in enumerate(c)))
    task = lambda path: TaskSpec(name="answers", type="ranking", text_columns=("question", "answer"),  # noqa: E731
                                 data_files={"train": str(path)})
    assert load_split(task(grouped), "train", None) == load_split(task(flat), "train", None)
    assert load_split(task(grouped), "train", None)["label"] == [1, 0]
    grouped.write_text(json.dumps({"question": "q", "answer": ["x", "y"], "label": 2}) + "\n")
    with pytest.raises(MTDNNError, match=r"grouped.jsonl, line 1: `label` must be the position"):
        load_split(task(grouped), "train", None)


@needs_glue("QNLI/dev.tsv")
def test_qnli_ranking_trains_and_evaluates_through_the_cli(tiny_model_dir, tmp_path, capsys):
    """QNLI's training set is not here: half of the dev questions (in the grouped jsonl format) train, half evaluate."""
    columns = load_split(GLUE_TASKS["qnli_ranking"], "dev", GLUE_DIR)
    groups = list(zip(columns["text_a"], columns["candidates"], columns["label"]))
    random.Random(0).shuffle(groups)
    for split, part in (("train", groups[:48]), ("dev", groups[48:80])):
        with open(tmp_path / f"{split}.jsonl", "w") as handle:
            for query, candidates, label in part:
                handle.write(json.dumps({"question": query, "sentence": candidates, "label": label}) + "\n")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "data": {"max_seq_length": 48},
              "tasks": [{"name": "qnli_ranking",
                         "data_files": {split: str(tmp_path / f"{split}.jsonl") for split in ("train", "dev")}}],
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", f"output_dir={tmp_path / 'out'}"]) == 0
    logged = json.loads(capsys.readouterr().out)["dev_metrics"]["qnli_ranking"]
    assert main(["evaluate", str(tmp_path / "out" / "last")]) == 0
    assert json.loads(capsys.readouterr().out)["qnli_ranking"]["accuracy"] == pytest.approx(logged["accuracy"])
