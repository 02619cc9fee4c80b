"""Labelled files: what `evaluate` and `calibrate` read and `export --reviewed` writes.

JSON lines (`{"text": ..., "label": ...}`), or CSV/TSV with a header naming a text and a label
column; a `.gz` suffix is read through gzip. The format follows the file name (`.jsonl`, `.ndjson`,
`.json`, `.csv`, `.tsv`, each optionally `.gz`), and the column names are flags. Labels may be
positive/negative, pos/neg, 1/0, POSITIVE/NEGATIVE or LABEL_1/LABEL_0 (any case); anything else,
a missing or blank text, or a line that is not JSON stops the read with the file and line named.

Star ratings can stand for labels (`--rating-column rating`): 1-2 negative, 4-5 positive; a 3 is
mixed and left out (counted).

A row may carry a category beside its label (`category`, or the column `--category-column` names),
as `export` writes a reviewer's tag: checked against the category file when one is given
(TRIAGE_CATEGORIES), `general` meaning "tagged, but no team's category"; a row without one is
untagged (it teaches sentiment only).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from worker.contracts.categories import CategoryError, CategoryList
from worker.contracts.errors import OperatorError
from worker.contracts.values import Sentiment

LABELS: dict[str, Sentiment] = {
    "positive": "positive",
    "pos": "positive",
    "1": "positive",
    "label_1": "positive",
    "negative": "negative",
    "neg": "negative",
    "0": "negative",
    "label_0": "negative",
}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class LabelledFileError(OperatorError):
    """A labelled file that cannot be read; the message names the file and line."""


RATINGS: dict[int, Sentiment | None] = {1: "negative", 2: "negative", 3: None, 4: "positive", 5: "positive"}


@dataclass(frozen=True)
class Example:
    text: str
    label: Sentiment
    line: int  # where it came from, for messages
    weight: float = 1.0  # how much the example counts (audit-sample verdicts may count more)
    category: str | None = None  # the reviewer's category tag; None: untagged


def parse_label(value: object) -> Sentiment | None:
    if isinstance(value, bool):  # JSON true/false are not labels: 1/0 only as numbers or strings
        return None
    if isinstance(value, (int, float)) and value in (0, 1):
        value = int(value)
    return LABELS.get(str(value).strip().lower())


def parse_rating(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and int(number) in RATINGS else None


def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if not suffixes or suffixes[-1] not in FORMATS:
        raise LabelledFileError(f"{path}: cannot tell the format from the name; use .jsonl, .csv or .tsv (or .gz)")
    return FORMATS[suffixes[-1]]


def read_examples(
    path: Path,
    text_column: str = "text",
    label_column: str = "label",
    *,
    rating_column: str | None = None,
    audit_weight: float = 1.0,
    category_column: str = "category",
    categories: CategoryList | None = None,
) -> list[Example]:
    """The labelled examples of `path`; with `rating_column`, labels come from 1-5 star ratings (3s
    left out). Rows `export` marked as audit-sample verdicts (`"audit": true`) weigh `audit_weight`.
    A non-empty `category_column` is the row's category tag, checked against `categories` if given."""
    if not path.is_file():
        raise OperatorError(f"no such file: {path}")
    kind = file_format(path)
    column = rating_column or label_column
    with _open(path) as handle:
        if kind == "jsonl":
            rows = _json_lines(handle, path)
        else:
            rows = _delimited(handle, path, kind, text_column, column)
        examples = []
        for line, fields in rows:
            example = _example(path, line, fields, text_column, column, rating=rating_column is not None)
            if example is not None:
                if fields.get("audit") is True:
                    example = replace(example, weight=audit_weight)
                tag = fields.get(category_column)
                if tag not in (None, ""):
                    example = replace(example, category=_category(path, line, tag, categories))
                examples.append(example)
    if not examples:
        raise LabelledFileError(f"{path}: no labelled examples")
    return examples


def _category(path: Path, line: int, tag: object, categories: CategoryList | None) -> str:
    if not isinstance(tag, str):
        raise LabelledFileError(f"{path}:{line}: category {tag!r} is not a name")
    name = tag.strip()
    if categories is None:
        return name
    try:
        return categories.check(name, f"{path}:{line}: category")
    except CategoryError as exc:
        raise LabelledFileError(str(exc)) from None


def read_texts(path: Path, text_column: str = "text") -> list[str]:
    """Only the texts of a file in the same formats (for `adapt`): labels are neither needed nor read."""
    if not path.is_file():
        raise OperatorError(f"no such file: {path}")
    kind = file_format(path)
    texts = []
    with _open(path) as handle:
        rows = _json_lines(handle, path) if kind == "jsonl" else _delimited(handle, path, kind, text_column, None)
        for line, fields in rows:
            text = fields.get(text_column)
            if not isinstance(text, str):
                raise LabelledFileError(f"{path}:{line}: no text in {text_column!r}")
            texts.append(text)
    return texts


def write_example(handle: IO[str], text: str, label: Sentiment, **extra: object) -> None:
    """One line of the JSON-lines format `read_examples` reads (extra keys are ignored there)."""
    handle.write(json.dumps({"text": text, "label": label, **extra}, ensure_ascii=False) + "\n")


def _open(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _json_lines(handle: IO[str], path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    for line, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            fields = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LabelledFileError(f"{path}:{line}: not JSON ({exc.msg})") from None
        if not isinstance(fields, dict):
            raise LabelledFileError(f"{path}:{line}: expected a JSON object, got {type(fields).__name__}")
        yield line, fields


def _delimited(
    handle: IO[str], path: Path, kind: str, text_column: str, label_column: str | None
) -> Iterator[tuple[int, dict[str, object]]]:
    csv.field_size_limit(16 * 1024 * 1024)
    reader = csv.DictReader(handle, delimiter="\t" if kind == "tsv" else ",")
    needed = [text_column] if label_column is None else [text_column, label_column]
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise LabelledFileError(
            f"{path}: no column {', '.join(map(repr, missing))} in the header {reader.fieldnames}; "
            "name the columns with --text-column and --label-column"
        )
    for fields in reader:
        yield reader.line_num, fields  # the line the record ends on (a quoted text may span lines)


def _example(
    path: Path, line: int, fields: dict[str, object], text_column: str, label_column: str, *, rating: bool = False
) -> Example | None:
    text = fields.get(text_column)
    if not isinstance(text, str) or not text.strip():
        raise LabelledFileError(f"{path}:{line}: no text in {text_column!r}")
    if label_column not in fields:
        raise LabelledFileError(f"{path}:{line}: no {'rating' if rating else 'label'} in {label_column!r}")
    if rating:
        stars = parse_rating(fields[label_column])
        if stars is None:
            raise LabelledFileError(f"{path}:{line}: rating {fields[label_column]!r} is not a whole number from 1 to 5")
        mapped = RATINGS[stars]
        return None if mapped is None else Example(text, mapped, line)
    label = parse_label(fields[label_column])
    if label is None:
        raise LabelledFileError(
            f"{path}:{line}: label {fields[label_column]!r} is not one of "
            "positive/negative, pos/neg, 1/0, POSITIVE/NEGATIVE, LABEL_1/LABEL_0"
        )
    return Example(text, label, line)
