"""The GLUE rows of the task table: hub columns and splits as on `nyu-mll/glue`, TSV files and columns as in
`download_glue_data.py`, leaderboard file names. MNLI-mismatched, AX and QNLI-as-ranking are rows too."""

from __future__ import annotations

from mtdnn.task_spec import GlueFiles, TaskSpec


def _glue(name: str, type: str, text: tuple[str, ...], labels: tuple[str, ...] | None, metrics: tuple[str, ...],
          tsv_dir: str, tsv_text: tuple[str, ...], tsv_label: str | None, submission: str, **extra) -> TaskSpec:
    """A GLUE row: hub columns/splits as on `nyu-mll/glue`, TSV names as in `download_glue_data.py`."""
    splits = extra.pop("splits", {"train": "train", "dev": "validation", "test": "test"})
    files = extra.pop("files", {split: f"{tsv_dir}/{split}.tsv" for split in splits})
    glue = GlueFiles(files=files, text_columns=tsv_text, label_column=tsv_label,
                     index_column=extra.pop("tsv_index", "index"), headerless_columns=extra.pop("headerless", ()),
                     fallback_files=extra.pop("fallback_files", {}))
    return TaskSpec(name=name, type=type, text_columns=text, label_names=labels, metrics=metrics, splits=splits,
                    hub_dataset="nyu-mll/glue", hub_config=extra.pop("hub_config", name), glue=glue,
                    submission_file=submission, **extra)


_NLI = ("entailment", "neutral", "contradiction")
_PAIR = "pair_classification"

GLUE_TASKS: dict[str, TaskSpec] = {
    task.name: task
    for task in (
        _glue("cola", "single_classification", ("sentence",), ("unacceptable", "acceptable"),
              ("matthews_correlation",), "CoLA", ("sentence",), "label", "CoLA.tsv",
              headerless=("source", "label", "original_label", "sentence")),
        _glue("sst2", "single_classification", ("sentence",), ("negative", "positive"), ("accuracy",),
              "SST-2", ("sentence",), "label", "SST-2.tsv"),
        _glue("mrpc", _PAIR, ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1"),
              "MRPC", ("#1 String", "#2 String"), "Quality", "MRPC.tsv"),
        _glue("stsb", "regression", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"),
              "STS-B", ("sentence1", "sentence2"), "score", "STS-B.tsv"),
        _glue("qqp", _PAIR, ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"),
              "QQP", ("question1", "question2"), "is_duplicate", "QQP.tsv", tsv_index="id"),
        _glue("mnli", _PAIR, ("premise", "hypothesis"), _NLI, ("accuracy",), "MNLI",
              ("sentence1", "sentence2"), "gold_label", "MNLI-m.tsv",
              splits={"train": "train", "dev": "validation_matched", "test": "test_matched"},
              files={"train": "MNLI/train.tsv", "dev": "MNLI/dev_matched.tsv", "test": "MNLI/test_matched.tsv"}),
        _glue("mnli_mismatched", _PAIR, ("premise", "hypothesis"), _NLI, ("accuracy",), "MNLI",
              ("sentence1", "sentence2"), "gold_label", "MNLI-mm.tsv", head="mnli", hub_config="mnli",
              splits={"dev": "validation_mismatched", "test": "test_mismatched"},
              files={"dev": "MNLI/dev_mismatched.tsv", "test": "MNLI/test_mismatched.tsv"}),
        _glue("qnli", _PAIR, ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",),
              "QNLI", ("question", "sentence"), "label", "QNLI.tsv"),
        _glue("rte", _PAIR, ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",),
              "RTE", ("sentence1", "sentence2"), "label", "RTE.tsv"),
        _glue("wnli", _PAIR, ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
              "WNLI", ("sentence1", "sentence2"), "label", "WNLI.tsv"),
        _glue("ax", _PAIR, ("premise", "hypothesis"), _NLI, ("matthews_correlation",), "AX",
              ("sentence1", "sentence2"), None, "AX.tsv", head="mnli", splits={"test": "test"},
              fallback_files={"test": ("diagnostic/diagnostic.tsv",)}),  # where download_glue_data.py puts it
    )
}
# QNLI as the paper's ranking task (section 4.2): the GLUE v2 rows grouped by question; only questions with exactly
# one answer sentence among two or more candidates are kept. Read from the GLUE TSV files only: the hub's integer
# labels put `entailment` (the positive) at 0, which the ranking reader would take for a negative.
GLUE_TASKS["qnli_ranking"] = TaskSpec(
    name="qnli_ranking", type="ranking", text_columns=("question", "sentence"),
    label_names=("not_entailment", "entailment"), metrics=("accuracy",), skip_invalid_groups=True,
    glue=GlueFiles(files={split: f"QNLI/{split}.tsv" for split in ("train", "dev", "test")},
                   text_columns=("question", "sentence"), label_column="label"),
)
