"""The FAQ's SQLite FTS5 index: built once per version of the FAQ file, searched every turn.

Ranking uses FTS5's bm25 with column weights (the question and its alternates count more than
the answer) and porter stemming. bm25 values are not comparable across knowledge bases, so the
confidence behind a hand-off is a separate, bounded number: the share of the question's
information (its words weighted by how rare they are in this knowledge base) that the entry
contains. A word no entry contains weighs the most, so a question about something the FAQ never
mentions stays below the threshold however many of its other words match.
"""

import hashlib
import math
import os
import re
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from chatbot.faq_load import FaqEntry

INDEX_VERSION = "1"  # bump when the schema or the way entries are indexed changes
TOKENIZER = "porter unicode61 remove_diacritics 2"
# bm25 weights for (question, alternates, answer, faq_id); faq_id is not indexed.
COLUMN_WEIGHTS = (4.0, 3.0, 1.0, 0.0)
ANSWER_ONLY_CREDIT = 0.6  # a word found only in the answer is weaker evidence than in a question
CANDIDATES = 20

# Function words and chat filler: they say nothing about which entry is meant.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been before
    being below between both but by can cannot could couldn did didn do does doesn doing don down
    during each few for from further had hadn has hasn have haven having he her here hers herself
    him himself his how i if in into is isn it its itself just ll me might more most must mustn my
    myself need needn no nor not now of off on once only or other ought our ours ourselves out over
    own re same shan she should shouldn so some such than that the their theirs them themselves then
    there these they this those through to too under until up ve very was wasn we were weren what
    when where which while who whom why will with won would wouldn you your yours yourself
    yourselves also anyone anything get got getting go going want wanted wants like know let
    tell please pls plz thanks thank thx hi hello hey hiya dear ok okay yes yeah yep guys
    someone somebody something possible way able us may shall im ive id youre dont doesnt
    didnt cant wont isnt hasnt havent wasnt hi there s t d m o y
    """.split()
)
_WORD = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """The question's content words: lowercased, stopwords dropped, each once, in order.

    Only letters and digits survive, so nothing the user types can become FTS5 syntax.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


@dataclass(frozen=True)
class Candidate:
    """An entry the index found, with its bm25 rank and its coverage of the question."""

    faq_id: str
    bm25: float  # FTS5 bm25: negative, more negative is better
    coverage: float  # 0..1: the share of the question's information the entry contains


class FaqIndex:
    """An open FTS5 index over one version of one FAQ file."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None, rebuilt: bool):
        self.db = sqlite_utils.Database(connection)
        self.path = path  # None when the index lives in memory
        self.rebuilt = rebuilt
        self._lock = threading.Lock()  # the app retrieves from worker threads
        self._size = self.db.execute("SELECT count(*) FROM faq_fts").fetchone()[0]

    def search(self, terms: list[str], limit: int) -> list[Candidate]:
        """The best entries for the query terms, best first (coverage, then bm25)."""
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        sql = (
            "SELECT rowid, faq_id, bm25(faq_fts, ?, ?, ?, ?) AS rank FROM faq_fts "
            "WHERE faq_fts MATCH ? ORDER BY rank LIMIT ?"
        )
        with self._lock:
            ranked = self.db.execute(sql, [*COLUMN_WEIGHTS, match, CANDIDATES]).fetchall()
            if not ranked:
                return []
            coverage = self._coverage(terms, [row[0] for row in ranked])
        found = [Candidate(faq_id, rank, coverage[rowid]) for rowid, faq_id, rank in ranked]
        found.sort(key=lambda c: (-round(c.coverage, 6), c.bm25))
        return found[:limit]

    def _coverage(self, terms: list[str], rowids: list[int]) -> dict[int, float]:
        """Per candidate row: IDF-weighted share of the terms it contains (answer-only: less)."""
        weights: dict[str, float] = {}
        in_question: dict[str, set[int]] = {}
        anywhere: dict[str, set[int]] = {}
        for term in terms:
            rows = self._rows_matching(f'"{term}"')
            weights[term] = self._idf(len(rows))
            anywhere[term] = rows
            in_question[term] = self._rows_matching(f'{{question alternates}} : "{term}"')
        total = sum(weights.values())
        result = {}
        for rowid in rowids:
            got = 0.0
            for term, weight in weights.items():
                if rowid in in_question[term]:
                    got += weight
                elif rowid in anywhere[term]:
                    got += weight * ANSWER_ONLY_CREDIT
            result[rowid] = got / total if total else 0.0
        return result

    def _rows_matching(self, match: str) -> set[int]:
        rows = self.db.execute("SELECT rowid FROM faq_fts WHERE faq_fts MATCH ?", [match])
        return {row[0] for row in rows}

    def _idf(self, containing: int) -> float:
        """BM25's idf, always positive; largest for a word no entry contains."""
        return math.log(1.0 + (self._size - containing + 0.5) / (containing + 0.5))

    def close(self) -> None:
        self.db.close()


def index_file_for(faq_path: Path, index_dir: Path) -> Path:
    """One index file per FAQ file, named by its absolute path."""
    key = hashlib.sha256(str(faq_path.resolve()).encode()).hexdigest()[:16]
    return index_dir / f"{faq_path.stem[:40]}-{key}.sqlite"


def open_index(
    faq_path: Path, entries: list[FaqEntry], raw: bytes, index_dir: Path
) -> tuple[FaqIndex, str | None]:
    """Open the cached index for these file contents, rebuilding it when the file changed.

    Returns the index and a warning when the cache folder cannot be written (the index then
    lives in memory for this run).
    """
    digest = hashlib.sha256(raw).hexdigest()
    path = index_file_for(faq_path, index_dir)
    if _is_current(path, digest):
        return FaqIndex(_connect(path), path, rebuilt=False), None
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        _build_file(path, entries, digest, str(faq_path.resolve()))
    except (OSError, sqlite3.Error) as exc:
        connection = _connect(":memory:")
        _fill(sqlite_utils.Database(connection), entries, digest, str(faq_path))
        warning = f"cannot write the FAQ index in {index_dir} ({exc}); using a temporary one"
        return FaqIndex(connection, None, rebuilt=True), warning
    return FaqIndex(_connect(path), path, rebuilt=True), None


def _connect(path: Path | str) -> sqlite3.Connection:
    return sqlite3.connect(str(path), check_same_thread=False)


def _is_current(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return False  # damaged or from an older layout: rebuild
    return meta.get("version") == INDEX_VERSION and meta.get("sha256") == digest


def _build_file(path: Path, entries: list[FaqEntry], digest: str, source: str) -> None:
    """Build beside the target and rename over it, so no reader sees a half-built index."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".building-", suffix=".sqlite")
    os.close(handle)
    try:
        connection = _connect(temp_name)
        try:
            _fill(sqlite_utils.Database(connection), entries, digest, source)
        finally:
            connection.close()
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _fill(db: sqlite_utils.Database, entries: list[FaqEntry], digest: str, source: str) -> None:
    with db.conn:
        db.execute(
            "CREATE VIRTUAL TABLE faq_fts USING fts5("
            f"question, alternates, answer, faq_id UNINDEXED, tokenize='{TOKENIZER}')"
        )
        db["faq_fts"].insert_all(
            {
                "question": entry.question,
                "alternates": "\n".join(entry.alternates),
                "answer": entry.answer,
                "faq_id": entry.id,
            }
            for entry in entries
        )
        db["meta"].insert_all(
            [
                {"key": "version", "value": INDEX_VERSION},
                {"key": "sha256", "value": digest},
                {"key": "source", "value": source},
            ],
            pk="key",
        )
