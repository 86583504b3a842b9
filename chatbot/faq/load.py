"""Reading a FAQ knowledge base from JSONL or CSV.

A knowledge base is written by people, so one bad line must not cost the other entries: each
problem becomes a warning naming its line, and only a file with nothing usable is an error.
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import KnowledgeBaseError

REQUIRED_FIELDS = ("id", "question", "answer")
CSV_ALTERNATES_SEPARATOR = "|"


@dataclass(frozen=True)
class FaqEntry:
    """One question of the knowledge base, with the phrasings customers also use."""

    id: str
    question: str
    answer: str
    category: str | None = None
    alternates: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """The entries that loaded, and one warning per line that did not."""

    entries: list[FaqEntry]
    warnings: list[str]
    raw: bytes  # the file's bytes, so the index can tell when the file changed


def load_knowledge_base(path: Path) -> LoadResult:
    """Read JSONL (one object a line) or CSV (by the .csv suffix); raise if nothing loads."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KnowledgeBaseError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and try again"
        ) from None
    if not text.strip():
        raise KnowledgeBaseError(f"{path} is empty; add FAQ entries (JSONL or CSV)")
    is_csv = path.suffix.lower() == ".csv"
    rows = _csv_rows(text, path) if is_csv else _jsonl_rows(text)
    entries, warnings = _collect(rows)
    if not entries:
        detail = f" ({warnings[0]})" if warnings else ""
        raise KnowledgeBaseError(f"{path} has no valid FAQ entries{detail}")
    return LoadResult(entries, warnings, raw)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeBaseError(f"FAQ file {path} does not exist") from None
    except IsADirectoryError:
        raise KnowledgeBaseError(f"{path} is a folder; give a .jsonl or .csv FAQ file") from None
    except OSError as exc:
        raise KnowledgeBaseError(f"cannot read FAQ file {path}: {exc.strerror}") from None


# A row is (line number, parsed fields or None, problem text when unparsable).
Row = tuple[int, dict | None, str]


def _jsonl_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((number, None, f"not valid JSON ({exc.msg})"))
            continue
        if isinstance(value, dict):
            rows.append((number, value, ""))
        else:
            rows.append((number, None, "expected a JSON object with id, question and answer"))
    return rows


def _csv_rows(text: str, path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise KnowledgeBaseError(
            f"{path}: the CSV header must be id,question,answer (optional category); "
            f"missing {', '.join(missing)}"
        )
    reader.fieldnames = header
    rows: list[Row] = []
    start = reader.line_num + 1
    for record in reader:
        if None in record:
            rows.append((start, None, "more fields than the header has"))
        elif all(not (value or "").strip() for value in record.values()):
            pass  # a blank line inside the file
        else:
            fields = dict(record)
            alternates = fields.pop("alternates", None)
            if alternates:
                fields["alternates"] = alternates.split(CSV_ALTERNATES_SEPARATOR)
            rows.append((start, fields, ""))
        start = reader.line_num + 1
    return rows


def _collect(rows: list[Row]) -> tuple[list[FaqEntry], list[str]]:
    entries: list[FaqEntry] = []
    warnings: list[str] = []
    first_line: dict[str, int] = {}
    for number, fields, problem in rows:
        entry, problem = (None, problem) if fields is None else _entry(fields)
        if entry is None:
            warnings.append(f"line {number}: {problem}; skipped")
        elif entry.id in first_line:
            warnings.append(
                f"line {number}: duplicate id {entry.id!r} (first on line "
                f"{first_line[entry.id]}); skipped"
            )
        else:
            first_line[entry.id] = number
            entries.append(entry)
    return entries, warnings


def _entry(fields: dict) -> tuple[FaqEntry | None, str]:
    """Validate one record; return the entry, or None and what is wrong with it."""
    values: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name == "id":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            return None, f"missing or empty {name!r}"
        values[name] = " ".join(value.split()) if name == "id" else value.strip()
    category = fields.get("category")
    if category is not None and not isinstance(category, str):
        return None, "'category' must be text"
    alternates = fields.get("alternates") or []
    if not isinstance(alternates, list) or not all(isinstance(a, str) for a in alternates):
        return None, "'alternates' must be a list of texts"
    return FaqEntry(
        id=values["id"],
        question=values["question"],
        answer=values["answer"],
        category=(category or "").strip() or None,
        alternates=tuple(a.strip() for a in alternates if a.strip()),
    ), ""
