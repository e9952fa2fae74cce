"""Reading data files: UTF-8 text only, .tsv/.csv with a header line, .json/.jsonl as JSON lines; every record
keeps its line number (under LINE) for error messages, and anything else is refused naming the file and line."""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from pathlib import Path

from mtdnn.errors import MTDNNError
from mtdnn.tasks import GlueFiles

csv.field_size_limit(sys.maxsize)

LINE = "__line__"
"""Key under which file readers keep each record's line number, for error messages."""


BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))  # UTF-32 LE starts like UTF-16 LE

JSON_LINES = ("a .json or .jsonl data file is read as JSON lines: one JSON object per line, its keys the column names "
              "(a file holding one JSON array converts with `jq -c '.[]' FILE`)")


def decode_utf8(data: bytes, path: Path | str, offset: int = 0, line: int = 1) -> str:
    """`data` (bytes from `offset` of `path`, starting on `line`) as text; refused, naming the line and byte
    offset, where it is not UTF-8 text: another encoding's byte-order mark, a byte that is not UTF-8, a NUL."""
    for mark, encoding in BYTE_ORDER_MARKS if offset == 0 else ():
        if data.startswith(mark):
            raise MTDNNError(f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark); data "
                             f"files must be UTF-8. Convert it (`iconv -f {encoding} -t UTF-8 {Path(path).name} > "
                             "new`) and point the config at the converted file.")
    try:
        text = data.decode("utf-8")
        if b"\0" not in data:
            return text
        bad = len(data)
    except UnicodeDecodeError as error:
        bad = error.start
    nul = data.find(b"\0", 0, bad)  # the first problem is the one to name
    if nul >= 0:
        bad, problem = nul, ("a NUL byte: this is binary data (or UTF-16 without a byte-order mark), and data files "
                             "must be UTF-8 text. Name the text file that was meant, or convert it to UTF-8.")
    else:
        problem = (f"byte 0x{data[bad]:02x} is not UTF-8, and data files must be UTF-8 text. Re-save the file as "
                   "UTF-8 (e.g. `iconv -f latin1 -t UTF-8`), or name the text file that was meant.")
    newline = b"\n"
    raise MTDNNError(f"{path}, line {line + data.count(newline, 0, bad)} (byte {offset + bad}): {problem}")


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 data file, a leading byte-order mark dropped; anything else is refused (`decode_utf8`)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MTDNNError(f"cannot read data file {path}: {error.strerror}.") from None
    return decode_utf8(data, path).removeprefix("\ufeff")


def check_utf8_file(path: Path, chunk_size: int = 1 << 24) -> None:
    """Refuse `path` unless it is UTF-8 text (as `decode_utf8`), read a chunk at a time: corpora can be large."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                data = decoder.getstate()[0] + chunk  # with the start of a character the last chunk cut in two
                try:
                    decoder.decode(chunk)
                    whole = len(data) - len(decoder.getstate()[0])
                except UnicodeDecodeError:
                    whole = len(data)  # decode_utf8 names the byte
                decode_utf8(data[:whole], path, offset, line)
                offset, line = offset + whole, line + data.count(b"\n", 0, whole)
    except OSError as error:
        raise MTDNNError(f"cannot read text file {path}: {error.strerror}.") from None
    decode_utf8(decoder.getstate()[0], path, offset, line)  # a character cut off by the end of the file


def _table_rows(path: Path, **dialect) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each row of a delimited file; a quoted field may span lines."""
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""), **dialect)
    rows, line = [], 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as error:
        raise MTDNNError(f"{path}, line {reader.line_num}: cannot be read as a delimited file ({error}).") from None
    return rows


def _table_records(path: Path, header: list[str], rows, header_line: int | None, separated: str,
                   advice: str) -> list[dict]:
    """Rows as records keyed by the header, each as long as the header; a column named twice is refused."""
    repeated = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if repeated is not None:
        raise MTDNNError(f"{path}, line {header_line}: the header names the column {repeated!r} twice; give each "
                         "column its own name.")
    records = []
    for line, row in rows:
        if len(row) != len(header):
            raise MTDNNError(f"{path}, line {line}: {len(row)} {separated} fields where the header has "
                             f"{len(header)}; {advice}")
        records.append({**dict(zip(header, row)), LINE: line})
    return records


def read_glue_tsv(path: Path, glue: GlueFiles) -> list[dict]:
    """Rows of a GLUE TSV exactly as distributed: no quote processing, BOM stripped, optional header."""
    rows = _table_rows(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    if not rows:
        raise MTDNNError(f"{path} is empty.")
    first = rows[0][1]
    has_header = not (glue.headerless_columns and len(first) == len(glue.headerless_columns) and first[0] != "index")
    header = first if has_header else list(glue.headerless_columns)
    return _table_records(path, header, rows[1:] if has_header else rows, 1 if has_header else None,
                          "tab-separated", "a GLUE file must be read without quote processing and keep every row "
                          "whole; in your own file, a text must not hold a tab.")


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file with a header line; blank lines are skipped."""
    rows = [(line, row) for line, row in _table_rows(path) if row]
    if not rows:
        return []
    return _table_records(path, rows[0][1], rows[1:], rows[0][0], "comma-separated",
                          'quote a field that holds a comma ("a, b") and check that no field is missing.')


def _json_object(pairs: list[tuple]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if repeated is not None:
        raise ValueError(f"the key {repeated!r} appears twice in one object; give each key once")
    return dict(pairs)


JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "true/false", type(None): "null"}


def read_json_lines(path: Path) -> list[dict]:
    """Records of a JSON-lines file (.json and .jsonl alike), one object per non-blank line."""
    records = []
    for number, line in enumerate(io.StringIO(read_utf8(path)), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_json_object)
        except json.JSONDecodeError as error:
            raise MTDNNError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                             f"{JSON_LINES}.") from None
        except (ValueError, RecursionError) as error:
            raise MTDNNError(f"{path}, line {number}: {error}.") from None
        if not isinstance(value, dict):
            raise MTDNNError(f"{path}, line {number}: a JSON {JSON_KINDS[type(value)]}, not an object; "
                             f"{JSON_LINES}.")
        records.append({**value, LINE: number})
    return records


def read_local_file(path: Path) -> list[dict]:
    if path.is_dir():
        raise MTDNNError(f"data file {path} is a directory; name the file in it.")
    if not path.is_file():
        raise MTDNNError(f"data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return read_glue_tsv(path, GlueFiles(files={}, text_columns=(), label_column=None))
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".json", ".jsonl"):
        return read_json_lines(path)
    raise MTDNNError(f"data file {path}: unsupported extension {suffix!r}; use .tsv, .csv, .json or .jsonl.")
