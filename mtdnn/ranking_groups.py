"""Ranking examples: one query with its candidates, from one row per (query, candidate) or from one record per
query holding the candidate list."""

from __future__ import annotations

import logging

from mtdnn.data_files import LINE
from mtdnn.errors import MTDNNError
from mtdnn.tasks import TaskSpec

logger = logging.getLogger(__name__)


def group_candidates(columns: dict[str, list], task: TaskSpec) -> dict[str, list]:
    """Ranking: one example per query, its candidates in file order, `label` = the positive's position."""
    groups: dict[str, dict] = {}
    for row, query in enumerate(columns["text_a"]):
        group = groups.setdefault(query, {"idx": columns["idx"][row], "candidates": [], "labels": []})
        group["candidates"].append(columns["text_b"][row])
        if "label" in columns:
            group["labels"].append(columns["label"][row])
    grouped: dict[str, list] = {"idx": [], "text_a": [], "candidates": []}
    if "label" in columns:
        grouped["label"] = []
    skipped = 0
    for query, group in groups.items():
        if "label" in columns and task.skip_invalid_groups and (sum(group["labels"]) != 1 or len(group["labels"]) < 2):
            skipped += 1
            continue
        grouped["idx"].append(group["idx"])
        grouped["text_a"].append(query)
        grouped["candidates"].append(group["candidates"])
        if "label" in columns:
            if sum(group["labels"]) != 1:
                raise MTDNNError(
                    f"task `{task.name}`: the query {query[:60]!r} has {sum(group['labels'])} positive candidates; "
                    "a ranking group needs exactly one."
                )
            grouped["label"].append(group["labels"].index(1))
    if skipped:
        logger.info("task %s: kept %d queries, skipped %d without exactly one positive among two or more candidates",
                    task.name, len(grouped["idx"]), skipped)
    return grouped


def expand_candidate_lists(records: list[dict], task: TaskSpec, source: str) -> list[dict]:
    """The grouped ranking format, one query per record: `{"question": q, "answer": [c0, c1, ...], "label": 2}`
    (the label is the positive's position), as one record per (query, candidate) with a 0/1 label.
    Records whose candidate column holds a single text pass through unchanged."""
    query_column, candidate_column = task.text_columns
    expanded = []
    for number, record in enumerate(records):
        candidates = record.get(candidate_column)
        if not isinstance(candidates, list):
            expanded.append(record)
            continue
        where = f"{source}, line {record.get(LINE, number + 1)}"
        positive = record.get(task.label_column)
        if not candidates:
            raise MTDNNError(f"{where}: `{candidate_column}` is an empty list; a query needs candidates.")
        if positive is not None and (isinstance(positive, bool) or not isinstance(positive, int)
                                     or not 0 <= positive < len(candidates)):
            raise MTDNNError(f"{where}: `{task.label_column}` must be the position of the positive candidate "
                             f"(0..{len(candidates) - 1}), got {positive!r}.")
        for position, candidate in enumerate(candidates):
            row = {**record, candidate_column: candidate}
            if positive is not None:
                row[task.label_column] = int(position == positive)
            if task.index_column and task.index_column not in record:
                row[task.index_column] = number
            expanded.append(row)
    return expanded
