"""Reading GLUE TSVs exactly, own task files, labels and ranking groups."""

import json

import pytest

from conftest import GLUE_DIR, needs_glue
from mtdnn.errors import MTDNNError
from mtdnn.source_columns import encode_label
from mtdnn.sources import load_split
from mtdnn.tasks import GLUE_TASKS, TaskSpec, resolve_tasks


@needs_glue("CoLA/train.tsv", "CoLA/dev.tsv", "CoLA/test.tsv")
def test_cola_has_no_header_and_keeps_every_row():
    train = load_split(GLUE_TASKS["cola"], "train", GLUE_DIR)
    assert len(train["idx"]) == 8551
    assert train["text_a"][0] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train["label"][0] == 1
    assert sum(train["label"]) == 6023
    dev = load_split(GLUE_TASKS["cola"], "dev", GLUE_DIR)
    assert (len(dev["idx"]), sum(dev["label"])) == (1043, 721)
    test = load_split(GLUE_TASKS["cola"], "test", GLUE_DIR)
    assert len(test["idx"]) == 1063 and "label" not in test
    assert test["text_a"][0] == "Bill whistled past the house."


@needs_glue("SST-2/train.tsv", "SST-2/dev.tsv")
def test_sst2_quotes_are_not_processed():
    train = load_split(GLUE_TASKS["sst2"], "train", GLUE_DIR)
    assert len(train["idx"]) == 67349 and sum(train["label"]) == 37569
    dev = load_split(GLUE_TASKS["sst2"], "dev", GLUE_DIR)
    assert dev["text_a"][0] == "it 's a charming and often affecting journey . "
    assert len(dev["idx"]) == 872 and sum(dev["label"]) == 444


@needs_glue("MRPC/train.tsv", "MRPC/dev.tsv", "MRPC/test.tsv")
def test_mrpc_bom_and_quotes():
    dev = load_split(GLUE_TASKS["mrpc"], "dev", GLUE_DIR)
    assert len(dev["idx"]) == 408 and sum(dev["label"]) == 279
    assert dev["text_b"][0].startswith('" The foodservice pie business does not')  # a quote kept verbatim
    assert len(load_split(GLUE_TASKS["mrpc"], "train", GLUE_DIR)["idx"]) == 3668
    assert len(load_split(GLUE_TASKS["mrpc"], "test", GLUE_DIR)["idx"]) == 1725


@needs_glue("STS-B/dev.tsv", "RTE/dev.tsv", "QNLI/dev.tsv", "WNLI/train.tsv", "AX/test.tsv")
def test_pair_tasks_map_labels_to_hub_ids():
    stsb = load_split(GLUE_TASKS["stsb"], "dev", GLUE_DIR)
    assert len(stsb["idx"]) == 1500 and stsb["label"][0] == 5.0
    assert stsb["text_a"][0] == "A man with a hard hat is dancing."
    rte = load_split(GLUE_TASKS["rte"], "dev", GLUE_DIR)
    assert rte["label"][0] == 1  # not_entailment is id 1 on the hub
    assert (len(rte["idx"]), rte["label"].count(0)) == (277, 146)
    qnli = load_split(GLUE_TASKS["qnli"], "dev", GLUE_DIR)
    assert (len(qnli["idx"]), qnli["label"].count(0)) == (5463, 2702)
    wnli = load_split(GLUE_TASKS["wnli"], "train", GLUE_DIR)
    assert (len(wnli["idx"]), sum(wnli["label"])) == (635, 312)  # 1 = entailment, as on the hub
    ax = load_split(GLUE_TASKS["ax"], "test", GLUE_DIR)
    assert len(ax["idx"]) == 1104 and ax["text_b"][0] == "The cat did not sit on the mat."


def test_missing_glue_file_and_no_hub_names_both_places(tmp_path):
    with pytest.raises(MTDNNError, match=r"(?s)MNLI/train.tsv.*hub"):
        load_split(GLUE_TASKS["mnli"], "train", tmp_path)


def _pair_task(tmp_path, text: str, **extra) -> TaskSpec:
    path = tmp_path / "train.tsv"
    path.write_text(text)
    return TaskSpec(name="mine", type="pair_classification", text_columns=("a", "b"), label_names=("no", "yes"),
                    data_files={"train": str(path)}, **extra)


def test_malformed_row_names_file_and_line(tmp_path):
    task = _pair_task(tmp_path, "a\tb\tlabel\nx\ty\tyes\nonly two\tfields\n")
    with pytest.raises(MTDNNError, match=r"train.tsv, line 3: 2 tab-separated fields"):
        load_split(task, "train", None)


def test_unknown_label_names_file_and_line(tmp_path):
    task = _pair_task(tmp_path, "a\tb\tlabel\nx\ty\tyes\nx\ty\tmaybe\n")
    with pytest.raises(MTDNNError, match=r"train.tsv, line 3: unknown label 'maybe'"):
        load_split(task, "train", None)


def test_labels_by_name_or_id_and_missing_column(tmp_path):
    task = _pair_task(tmp_path, "a\tb\tlabel\nx\ty\tyes\nx\ty\t0\n")
    assert load_split(task, "train", None)["label"] == [1, 0]
    wrong = _pair_task(tmp_path, "a\tc\tlabel\nx\ty\tyes\n")
    with pytest.raises(MTDNNError, match="no column 'b'"):
        load_split(wrong, "train", None)


def test_regression_target_must_be_finite():
    task = TaskSpec(name="r", type="regression", text_columns=("a", "b"))
    assert encode_label("2.5", task, "here") == 2.5
    with pytest.raises(MTDNNError, match="not a finite number"):
        encode_label("nan", task, "f.tsv, line 4")


def test_ranking_groups_candidates_and_needs_one_positive(tmp_path):
    path = tmp_path / "rank.tsv"
    path.write_text("q\tc\tlabel\nq1\tx\t0\nq1\ty\t1\nq2\tz\t1\nq2\tw\t0\nq2\tv\t0\n")
    task = TaskSpec(name="rank", type="ranking", text_columns=("q", "c"), data_files={"train": str(path)})
    columns = load_split(task, "train", None)
    assert columns["candidates"] == [["x", "y"], ["z", "w", "v"]]
    assert columns["label"] == [1, 0]
    path.write_text("q\tc\tlabel\nq1\tx\t1\nq1\ty\t1\n")
    with pytest.raises(MTDNNError, match="2 positive candidates"):
        load_split(task, "train", None)


def test_own_task_from_yaml_mapping_and_overrides_of_glue_rows():
    tasks = resolve_tasks(["sst2", {"name": "mnli", "dropout": 0.3},
                           {"name": "mine", "type": "regression", "text_columns": ["a", "b"],
                            "data_files": {"train": "x.csv"}}])
    assert tasks["mnli"].dropout == 0.3 and tasks["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert tasks["mine"].type == "regression" and tasks["mine"].num_labels == 1
    with pytest.raises(MTDNNError, match="unknown task `sst3`"):
        resolve_tasks(["sst3"])
    with pytest.raises(MTDNNError, match="unknown key `labels`"):
        resolve_tasks([{"name": "x", "type": "regression", "text_columns": ["a", "b"], "labels": []}])
    with pytest.raises(MTDNNError, match="unknown type 'pair'"):
        resolve_tasks([{"name": "x", "type": "pair", "text_columns": ["a", "b"]}])


def _diagnostic(directory, rows: int = 3):
    """AX as the classic `download_glue_data.py` writes it: `diagnostic/diagnostic.tsv`, no final newline."""
    (directory / "diagnostic").mkdir(parents=True)
    lines = ["index\tsentence1\tsentence2"] + [f"{i}\tthe dog {i}\tthe cat {i}" for i in range(rows)]
    (directory / "diagnostic" / "diagnostic.tsv").write_text("\n".join(lines))
    return directory


def test_ax_is_read_from_the_classic_diagnostic_layout(tmp_path):
    ax = load_split(GLUE_TASKS["ax"], "test", _diagnostic(tmp_path))
    assert ax["idx"] == [0, 1, 2] and ax["text_b"][2] == "the cat 2" and "label" not in ax
    (tmp_path / "AX").mkdir()
    (tmp_path / "AX" / "test.tsv").write_text("index\tsentence1\tsentence2\n7\ta\tb\n")
    assert load_split(GLUE_TASKS["ax"], "test", tmp_path)["idx"] == [7]  # AX/test.tsv first, where both exist


def test_missing_ax_names_every_layout_tried(tmp_path):
    with pytest.raises(MTDNNError, match=r"(?s)AX/test.tsv.*diagnostic/diagnostic.tsv.*hub"):
        load_split(GLUE_TASKS["ax"], "test", tmp_path)


def test_fallback_paths_survive_a_task_table_round_trip():
    """Checkpoints store the task table as JSON: the tuples of fallback paths come back as they were."""
    ax = GLUE_TASKS["ax"]
    assert TaskSpec.from_dict(json.loads(json.dumps(ax.to_dict()))) == ax
    assert ax.glue.candidates("test") == ("AX/test.tsv", "diagnostic/diagnostic.tsv")


def test_utf8_check_reads_in_chunks_and_names_the_first_bad_byte(tmp_path):
    """A character cut by a chunk boundary is whole text; a bad byte in a later chunk keeps its line and offset."""
    from mtdnn.data_files import check_utf8_file

    path = tmp_path / "corpus.txt"
    path.write_bytes("é\n".encode() * 5 + b"ok\n")
    check_utf8_file(path, chunk_size=2)  # each "é" (2 bytes) is cut in two by some chunk boundary
    path.write_bytes("é\n".encode() * 5 + b"ok \xff\n")
    with pytest.raises(MTDNNError, match=r"corpus.txt, line 6 \(byte 18\): byte 0xff is not UTF-8"):
        check_utf8_file(path, chunk_size=4)
    path.write_bytes(b"ok\n" + "é".encode()[:1])  # a character cut off by the end of the file
    with pytest.raises(MTDNNError, match=r"line 2 \(byte 3\): byte 0xc3"):
        check_utf8_file(path, chunk_size=2)


def test_friendly_files_are_read(tmp_path):
    """A UTF-8 byte-order mark (JSON lines too), blank CSV lines, whole-number ids written as 3.0, and an
    unlabeled test split are all fine."""
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": "x", "b": "y", "label": "yes", "idx": 3.0}).encode() + b"\n")
    csv_file = tmp_path / "blank.csv"
    csv_file.write_text("\ufeffa,b,label\nx,y,no\n\nx,\"y, z\",yes\n")
    test = tmp_path / "test.tsv"
    test.write_text("a\tb\tlabel\nx\ty\t\n")
    task = TaskSpec(name="mine", type="pair_classification", text_columns=("a", "b"), label_names=("no", "yes"),
                    data_files={"train": str(jsonl), "dev": str(csv_file), "test": str(test)})
    assert load_split(task, "train", None) == {"idx": [3], "text_a": ["x"], "text_b": ["y"], "label": [1]}
    dev = load_split(task, "dev", None)
    assert dev["text_b"] == ["y", "y, z"] and dev["label"] == [0, 1] and dev["idx"] == [0, 1]
    assert "label" not in load_split(task, "test", None)


def test_hub_data_stays_a_dataset_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    """A hub split is converted with datasets.map and tokenised from Arrow, never as a list of records."""
    import datasets

    import mtdnn.sources as sources
    from mtdnn.config import DataSettings
    from mtdnn.data import load_task_data
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import GLUE_TASKS

    splits = {"train": datasets.Dataset.from_dict({"sentence1": ["the dog", "a cat", "the film"],
                                                    "sentence2": ["a dog", "the cat", "a plot"],
                                                    "label": [0, 1, 1], "idx": [10, 11, 12]}),
              "test": datasets.Dataset.from_dict({"sentence1": ["the dog"], "sentence2": ["a cat"], "label": [-1],
                                                  "idx": [0]})}
    monkeypatch.setattr(sources.datasets, "load_dataset", lambda name, config, split: splits[split])
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setattr(datasets.Dataset, "to_list", lambda self: pytest.fail("a hub split became Python lists"))
    task = GLUE_TASKS["rte"]
    columns = sources.load_split(task, "train", None)
    assert isinstance(columns, datasets.Dataset) and set(columns.column_names) == {"idx", "text_a", "text_b", "label"}
    assert columns["idx"][:] == [10, 11, 12] and columns["label"][:] == [0, 1, 1]
    assert "label" not in sources.load_split(task, "test", None).column_names  # the hub's -1: unlabelled
    data = load_task_data(task, "train", load_tokenizer(str(tiny_model_dir)), DataSettings(cache_dir=str(tmp_path)))
    assert data.idx.tolist() == [10, 11, 12] and data.labels.tolist() == [0, 1, 1]
    splits["train"] = splits["train"].map(lambda row: {"label": -1})
    with pytest.raises(MTDNNError, match=r"no labels; the `train` split of task `rte`"):
        sources.load_split(task, "train", None)
