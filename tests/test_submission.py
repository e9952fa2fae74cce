"""GLUE submission files: names, headers, row order and counts, label formats, the zip, missing tasks listed."""

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import GLUE_DIR, make_checkpoint, needs_glue
from mtdnn.cli import main
from mtdnn.data_files import read_glue_tsv
from mtdnn.submission import format_predictions
from mtdnn.tasks import GLUE_TASKS

TEST_ROWS = {"CoLA.tsv": 1063, "SST-2.tsv": 1821, "MRPC.tsv": 1725, "STS-B.tsv": 1379, "RTE.tsv": 3000,
             "WNLI.tsv": 146, "AX.tsv": 1104, "QNLI.tsv": 5463}
"""Rows of the official GLUE test files present here (header excluded)."""
LABELS = {"CoLA.tsv": {"0", "1"}, "SST-2.tsv": {"0", "1"}, "MRPC.tsv": {"0", "1"}, "WNLI.tsv": {"0", "1"},
          "RTE.tsv": {"entailment", "not_entailment"}, "QNLI.tsv": {"entailment", "not_entailment"},
          "AX.tsv": {"entailment", "neutral", "contradiction"}}
HEADS = ["cola", "sst2", "mrpc", "stsb", "rte", "wnli", "mnli"]
TEST_FILES = [GLUE_TASKS[name].glue.files["test"]
              for name in ("cola", "sst2", "mrpc", "stsb", "rte", "wnli", "ax", "qnli")]
SHORT_ROWS = 40


def test_formats_follow_the_leaderboard():
    two = np.array([[0.1, 0.9], [2.0, -1.0]])
    assert format_predictions(GLUE_TASKS["cola"], two) == ["1", "0"]
    assert format_predictions(GLUE_TASKS["rte"], two) == ["not_entailment", "entailment"]
    three = np.array([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert format_predictions(GLUE_TASKS["ax"], three) == ["contradiction", "entailment"]
    assert format_predictions(GLUE_TASKS["stsb"], np.array([[-0.7], [2.5], [6.1]])) == ["0.000", "2.500", "5.000"]


@pytest.fixture(scope="module")
def glue_checkpoint(tiny_model_dir, tmp_path_factory):
    """An untrained tiny checkpoint with heads for every GLUE task with training data here, and MNLI (for AX)."""
    return make_checkpoint(tmp_path_factory.mktemp("glue_checkpoint"), tiny_model_dir, HEADS)


@pytest.fixture(scope="module")
def short_glue_dir(tmp_path_factory):
    """The real GLUE test files cut to their header and first rows: the same formats, seconds to predict."""
    directory = tmp_path_factory.mktemp("glue")
    for task in GLUE_TASKS.values():
        source = GLUE_DIR / task.glue.files["test"]
        if source.is_file():
            (directory / task.glue.files["test"]).parent.mkdir(exist_ok=True)
            lines = source.read_bytes().split(b"\n")
            (directory / task.glue.files["test"]).write_bytes(b"\n".join(lines[: 1 + SHORT_ROWS]) + b"\n")
    return directory


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _report(capsys) -> dict:
    return {entry["file"]: entry for entry in json.loads(capsys.readouterr().out)["files"]}


@needs_glue(*TEST_FILES)
def test_glue_submission_files(glue_checkpoint, short_glue_dir, tmp_path, capsys):
    assert main(["predict", str(glue_checkpoint), "--split", "test", "--glue-submission", "--data-dir",
                 str(short_glue_dir), "--output-dir", str(tmp_path)]) == 0
    report = _report(capsys)
    assert list(report) == ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                            "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"]
    for name, head in (("QNLI.tsv", "qnli"), ("QQP.tsv", "qqp")):
        assert report[name]["rows"] is None and f"no head `{head}`" in report[name]["status"]
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv"):  # a head, but no test file (and no hub)
        assert report[name]["status"].startswith("no test data") and not (tmp_path / name).exists()
    written = {name for name, entry in report.items() if entry["status"] == "written"}
    assert written == set(TEST_ROWS) - {"QNLI.tsv"}
    for name in written:
        task = GLUE_TASKS[report[name]["task"]]
        rows = _rows(tmp_path / name)
        assert rows[0] == ["index", "prediction"] and len(rows) - 1 == SHORT_ROWS == report[name]["rows"]
        source = read_glue_tsv(short_glue_dir / task.glue.files["test"], task.glue)
        assert [row[0] for row in rows[1:]] == [record["index"] for record in source], name  # test-file order
        if name == "STS-B.tsv":
            assert all(0.0 <= float(row[1]) <= 5.0 for row in rows[1:])
        else:
            assert {row[1] for row in rows[1:]} <= LABELS[name], name
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert set(archive.namelist()) == written


@needs_glue(*TEST_FILES)
def test_every_official_test_file_gets_all_its_rows(tiny_model_dir, tmp_path, capsys):
    """On the whole GLUE test files: a real head for WNLI, constant placeholders (--fill-missing) elsewhere."""
    checkpoint = make_checkpoint(tmp_path / "run", tiny_model_dir, ["wnli"])
    assert main(["predict", str(checkpoint), "--split", "test", "--glue-submission", "--data-dir", str(GLUE_DIR),
                 "--output-dir", str(tmp_path / "filled"), "--fill-missing"]) == 0
    report = _report(capsys)
    assert report["WNLI.tsv"]["status"] == "written"
    for name, rows in TEST_ROWS.items():
        assert report[name]["rows"] == rows == len(_rows(tmp_path / "filled" / name)) - 1, name
    for name, label in (("QNLI.tsv", "entailment"), ("AX.tsv", "entailment"), ("CoLA.tsv", "0"),
                        ("STS-B.tsv", "2.500")):
        assert report[name]["status"].startswith("placeholder")
        assert {row[1] for row in _rows(tmp_path / "filled" / name)[1:]} == {label}
    with zipfile.ZipFile(tmp_path / "filled" / "submission.zip") as archive:
        assert set(archive.namelist()) == set(TEST_ROWS)


def test_submission_needs_the_test_split(glue_checkpoint, tmp_path, capsys):
    assert main(["predict", str(glue_checkpoint), "--split", "dev", "--glue-submission",
                 "--output-dir", str(tmp_path)]) == 2
    assert "use it with --split test" in capsys.readouterr().err


@pytest.fixture(scope="module")
def diagnostic_glue_dir(tmp_path_factory):
    """A GLUE directory in the classic layout with AX only, as `diagnostic/diagnostic.tsv` (no AX/test.tsv)."""
    directory = tmp_path_factory.mktemp("classic_glue")
    (directory / "diagnostic").mkdir()
    lines = ["index\tsentence1\tsentence2"] + [f"{i}\tthe man is {i}\tthe dog is not {i}" for i in range(5)]
    (directory / "diagnostic" / "diagnostic.tsv").write_text("\n".join(lines))
    return directory


def test_ax_predictions_from_the_diagnostic_layout(glue_checkpoint, diagnostic_glue_dir, tmp_path, capsys):
    assert main(["predict", str(glue_checkpoint), "--split", "test", "--tasks", "ax", "--data-dir",
                 str(diagnostic_glue_dir), "--output-dir", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "ax.tsv")
    assert rows[0] == ["index", "prediction"] and [row[0] for row in rows[1:]] == ["0", "1", "2", "3", "4"]
    assert {row[1] for row in rows[1:]} <= LABELS["AX.tsv"]


def test_ax_submission_from_the_diagnostic_layout(glue_checkpoint, diagnostic_glue_dir, tmp_path, capsys):
    assert main(["predict", str(glue_checkpoint), "--split", "test", "--glue-submission", "--data-dir",
                 str(diagnostic_glue_dir), "--output-dir", str(tmp_path)]) == 0
    report = _report(capsys)
    assert report["AX.tsv"]["status"] == "written" and report["AX.tsv"]["rows"] == 5
    assert [row[0] for row in _rows(tmp_path / "AX.tsv")[1:]] == ["0", "1", "2", "3", "4"]
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert archive.namelist() == ["AX.tsv"]


@needs_glue(*TEST_FILES)
def test_two_processes_write_the_same_submission_once(glue_checkpoint, short_glue_dir, tmp_path, capsys):
    """`accelerate launch -m mtdnn predict --glue-submission`: the processes share each test set's batches; the main
    process writes the files one process writes."""
    import os
    import shutil
    import subprocess
    import sys

    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists() and not shutil.which("accelerate"):
        pytest.skip("accelerate CLI not installed")
    arguments = ["predict", str(glue_checkpoint), "--split", "test", "--glue-submission", "--data-dir",
                 str(short_glue_dir), "--batch-size", "3"]
    assert main([*arguments, "--output-dir", str(tmp_path / "alone")]) == 0
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MTDNN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtdnn", *arguments,
                             "--output-dir", str(tmp_path / "shared")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["files"] == json.loads(capsys.readouterr().out)["files"]  # printed once
    files = sorted(path.name for path in (tmp_path / "alone").glob("*.tsv"))
    assert len(files) == 7 and files == sorted(path.name for path in (tmp_path / "shared").glob("*.tsv"))
    for name in files:
        assert (tmp_path / "shared" / name).read_text() == (tmp_path / "alone" / name).read_text(), name
