"""The FAQ's SQLite FTS5 index and the scoring behind retrieval and hand-off.

Two signals, each bounded to 0..1 so that one threshold can serve different knowledge bases:
- lexical coverage: FTS5 (porter stemming) finds the entries sharing the question's words;
  coverage is the share of the question's information (its words weighted by how rare they are
  in this knowledge base, a word no entry contains weighing the most) that an entry's question
  or alternates contain (its answer counts for less). When words alone decide, bm25 with
  column weights breaks the many ties.
- semantic similarity: cosine between the question and the entry's question and alternates
  embedded by a sentence encoder (chatbot.faq.embed), which catches paraphrases with no word
  in common. Each sentence of the answer is embedded too, at a discount: a customer often asks
  about one detail of an answer (how many characters a password needs) rather than the entry's
  question. Without the encoder package, coverage alone decides.
"""

import hashlib
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import sqlite_utils
from threadpoolctl import threadpool_limits

from chatbot.faq.embed import ENCODER_ID, SentenceEncoder
from chatbot.faq.load import FaqEntry
from converter.files import atomic_output

INDEX_VERSION = "5"  # bump when the schema or the way entries are indexed changes
TOKENIZER = "porter unicode61 remove_diacritics 2"
# bm25 weights for (question, alternates, answer, faq_id); faq_id is not indexed.
COLUMN_WEIGHTS = (4.0, 3.0, 1.0, 0.0)
ANSWER_ONLY_CREDIT = 0.6  # a word found only in the answer is weaker evidence than in a question
CANDIDATES = 20
SEMANTIC_SHARE = 0.9  # weight of the semantic signal in the blend, when the encoder is there
# A question close to one sentence of an answer is weaker evidence that the entry answers it
# than a question close to the entry's own question (the same reasoning as ANSWER_ONLY_CREDIT).
# Chosen on the helpdesk evaluation set (data/eval/helpdesk_eval.jsonl), not on the store's.
ANSWER_SENTENCE_CREDIT = 0.9
MATCHES_KEPT = 512  # FTS5 lookups remembered (two per word of a question)
MAX_TERMS = 32  # a pasted essay is not a question; two FTS5 lookups per term stay bounded

# Function words and chat filler: they say nothing about which entry is meant.
_STOPWORD_TEXT = """
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
    didnt cant wont isnt hasnt havent wasnt s t d m o y
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def query_terms(text: str) -> list[str]:
    """The question's content words: lowercased, stopwords dropped, each once, in order.

    Only letters and digits survive, so nothing the user types can become FTS5 syntax.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def bm25_idf(containing: int, entries: int) -> float:
    """BM25's idf of a word in `containing` of `entries` entries: always positive, largest for
    a word no entry contains."""
    return math.log(1.0 + (entries - containing + 0.5) / (containing + 0.5))


def entry_words(entry: FaqEntry) -> tuple[str, ...]:
    """The content words of an entry's question, alternates and answer, each once."""
    parts = (entry.question, " ".join(entry.alternates), entry.answer)
    return tuple(dict.fromkeys(word for part in parts for word in query_terms(part)))


def answer_sentences(answer: str) -> list[str]:
    """The answer cut at sentence ends (and semicolons), each one a detail a customer may ask."""
    return [part.strip() for part in _SENTENCE_END.split(answer) if part.strip()]


@dataclass(frozen=True)
class Candidate:
    """An entry the index found, with each signal and their blend."""

    faq_id: str
    coverage: float  # 0..1: the share of the question's information the entry contains
    semantic: float  # 0..1: best (credited) cosine with the entry's phrasings (0 if none)
    score: float  # the blend the ranking and the hand-off decision use


class FaqIndex:
    """An open index over one version of one FAQ file."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None, rebuilt: bool):
        self.db = sqlite_utils.Database(connection)
        self.path = path  # None when the index lives in memory
        self.rebuilt = rebuilt
        self._lock = threading.Lock()  # the app retrieves from worker threads
        # FTS5 query -> rows, kept: a follow-up repeats the words of the message before.
        self._rows_matching = lru_cache(maxsize=MATCHES_KEPT)(self._query_rows)
        rows = self.db.execute("SELECT rowid, faq_id FROM faq_fts").fetchall()
        self._ids = dict(rows)
        self._size = len(rows)
        vectors = self.db.execute(
            "SELECT faq_id, vector, credit FROM vectors ORDER BY rowid"
        ).fetchall()
        # An entry's phrasings are stored together: each entry is one run of rows.
        owners = [faq_id for faq_id, _, _ in vectors]
        runs = [i for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
        self._run_owners = [owners[i] for i in runs]
        self._run_starts = np.array(runs, dtype=np.intp)
        # Each unit vector is stored scaled by its credit, so one product gives credited cosines.
        self._vectors = (
            np.stack([np.frombuffer(blob, dtype=np.float32) * w for _, blob, w in vectors])
            if vectors
            else None
        )
        if self._vectors is not None:
            _one_blas_thread()

    def search(
        self, terms: list[str], query_vector: np.ndarray | None, limit: int
    ) -> list[Candidate]:
        """The best entries, best first by the blended score."""
        semantic = self._semantic(query_vector)
        with self._lock:
            coverage = self._coverage(terms)
            # Words alone: bm25 orders the many entries that tie on coverage. With meaning,
            # blended scores rarely tie, and the query would cost a tenth of the retrieval.
            ranked = self._bm25(terms) if not semantic else _best(coverage)
        pool = dict.fromkeys([*ranked, *_best(semantic)])
        found = []
        for faq_id in pool:
            cov, sem = coverage.get(faq_id, 0.0), semantic.get(faq_id, 0.0)
            score = SEMANTIC_SHARE * sem + (1 - SEMANTIC_SHARE) * cov if semantic else cov
            found.append(Candidate(faq_id, cov, sem, score))
        order = {faq_id: position for position, faq_id in enumerate(ranked)}
        found.sort(key=lambda c: (-round(c.score, 6), order.get(c.faq_id, len(order))))
        return found[:limit]

    def _bm25(self, terms: list[str]) -> list[str]:
        """Entry ids by FTS5 bm25 (question and alternates weigh more than the answer)."""
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        sql = (
            "SELECT faq_id, bm25(faq_fts, ?, ?, ?, ?) AS rank FROM faq_fts "
            "WHERE faq_fts MATCH ? ORDER BY rank LIMIT ?"
        )
        return [row[0] for row in self.db.execute(sql, [*COLUMN_WEIGHTS, match, CANDIDATES])]

    def _coverage(self, terms: list[str]) -> dict[str, float]:
        """Per entry: IDF-weighted share of the terms it contains (answer-only: less)."""
        gained: dict[int, float] = {}
        total = 0.0
        for term in terms:
            anywhere = self._rows_matching(f'"{term}"')
            in_question = self._rows_matching(f'{{question alternates}} : "{term}"')
            weight = bm25_idf(len(anywhere), self._size)
            total += weight
            for rowid in anywhere:
                credit = 1.0 if rowid in in_question else ANSWER_ONLY_CREDIT
                gained[rowid] = gained.get(rowid, 0.0) + weight * credit
        return {self._ids[rowid]: got / total for rowid, got in gained.items()} if total else {}

    def _semantic(self, query_vector: np.ndarray | None) -> dict[str, float]:
        """Per entry: the best credited cosine of the question with the entry's phrasings."""
        if query_vector is None or self._vectors is None:
            return {}
        best = np.maximum.reduceat(self._vectors @ query_vector, self._run_starts)
        return dict(zip(self._run_owners, np.maximum(best, 0.0).tolist(), strict=True))

    def _query_rows(self, match: str) -> frozenset[int]:
        """The rows an FTS5 query matches. Read through `_rows_matching`."""
        found = self.db.execute("SELECT rowid FROM faq_fts WHERE faq_fts MATCH ?", [match])
        return frozenset(row[0] for row in found)

    def meta(self, key: str) -> str | None:
        """A value stored with the index (its stamp, the calibrated thresholds)."""
        with self._lock:
            rows = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a value with the index; kept while the FAQ file stays the same."""
        with self._lock, self.db.conn:
            self.db["meta"].upsert({"key": key, "value": value}, pk="key")

    def word_vectors(self) -> dict[str, np.ndarray]:
        """Each content word of the entries and its unit vector (for the answer check)."""
        with self._lock:
            rows = self.db.execute("SELECT word, vector FROM words").fetchall()
        return {word: np.frombuffer(blob, dtype=np.float32) for word, blob in rows}

    def text_vectors(self) -> dict[str, np.ndarray]:
        """Each indexed text (phrasing or answer sentence) and its unit vector."""
        with self._lock:
            rows = self.db.execute("SELECT text, vector FROM vectors").fetchall()
        return {text: np.frombuffer(blob, dtype=np.float32) for text, blob in rows}

    def close(self) -> None:
        self.db.close()


class _Known:
    """An encoder over vectors computed before (calibration builds many small indexes)."""

    def __init__(self, vector_of: Callable[[str], np.ndarray]):
        self.vector_of = vector_of

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:  # a knowledge base of one entry, that entry left out
            return np.empty((0, 0), dtype=np.float32)
        return np.stack([self.vector_of(text) for text in texts])


@contextmanager
def memory_index(
    entries: Sequence[FaqEntry], vector_of: Callable[[str], np.ndarray]
) -> Iterator[FaqIndex]:
    """A temporary in-memory index over these entries, with vectors already computed."""
    connection = _connect(":memory:")
    _fill(sqlite_utils.Database(connection), list(entries), {"version": INDEX_VERSION},
          _Known(vector_of))  # fmt: skip
    index = FaqIndex(connection, None, rebuilt=True)
    try:
        yield index
    finally:
        index.close()


def indexed_texts(entries: Sequence[FaqEntry]) -> list[tuple[str, str, float]]:
    """(entry id, text, credit) for each text embedded: phrasings, then answer sentences."""
    return [
        (entry.id, text, credit)
        for entry in entries
        for text, credit in [
            *((asked, 1.0) for asked in (entry.question, *entry.alternates)),
            *((sentence, ANSWER_SENTENCE_CREDIT) for sentence in answer_sentences(entry.answer)),
        ]
    ]


@cache
def _one_blas_thread() -> None:
    """One matrix-vector product per question: OpenBLAS threads only add spin-waiting, which
    on a machine busy with llama.cpp's threads costs 20x. Set once per process."""
    threadpool_limits(1, user_api="blas")


def _best(scores: dict[str, float]) -> list[str]:
    """The CANDIDATES best-scoring ids, best first."""
    return sorted(scores, key=scores.__getitem__, reverse=True)[:CANDIDATES]


def index_file_for(faq_path: Path, index_dir: Path) -> Path:
    """One index file per FAQ file, named by its absolute path."""
    key = hashlib.sha256(str(faq_path.resolve()).encode()).hexdigest()[:16]
    return index_dir / f"{faq_path.stem[:40]}-{key}.sqlite"


def open_index(
    faq_path: Path,
    entries: list[FaqEntry],
    raw: bytes,
    index_dir: Path,
    encoder: SentenceEncoder | None,
) -> tuple[FaqIndex, str | None]:
    """Open the cached index for these file contents, rebuilding it when the file changed.

    Returns the index and a warning when the cache folder cannot be written (the index then
    lives in memory for this run).
    """
    stamp = {
        "version": INDEX_VERSION,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "encoder": ENCODER_ID if encoder is not None else "none",
    }
    path = index_file_for(faq_path, index_dir)
    if _is_current(path, stamp):
        return FaqIndex(_connect(path), path, rebuilt=False), None
    stamp["source"] = str(faq_path.resolve())
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        _build_file(path, entries, stamp, encoder)
    except (OSError, sqlite3.Error) as exc:
        connection = _connect(":memory:")
        _fill(sqlite_utils.Database(connection), entries, stamp, encoder, words=True)
        warning = f"cannot write the FAQ index in {index_dir} ({exc}); using a temporary one"
        return FaqIndex(connection, None, rebuilt=True), warning
    return FaqIndex(_connect(path), path, rebuilt=True), None


def _connect(path: Path | str) -> sqlite3.Connection:
    return sqlite3.connect(str(path), check_same_thread=False)


def _is_current(path: Path, stamp: dict[str, str]) -> bool:
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return False  # damaged or from an older layout: rebuild
    return all(meta.get(key) == value for key, value in stamp.items())


def _build_file(
    path: Path, entries: list[FaqEntry], stamp: dict[str, str], encoder: SentenceEncoder | None
) -> None:
    """Build under a temporary name and rename it over the target, so no reader sees a
    half-built index (converter.files: the temp file is deleted on failure)."""
    with atomic_output(path, mode=0o600) as temp:
        connection = _connect(temp)
        try:
            _fill(sqlite_utils.Database(connection), entries, stamp, encoder, words=True)
        finally:
            connection.close()


def _fill(
    db: sqlite_utils.Database,
    entries: list[FaqEntry],
    stamp: dict[str, str],
    encoder: "SentenceEncoder | _Known | None",
    words: bool = False,
) -> None:
    """The index's tables; `words`: the entries' words embedded too (chatbot.faq.answer_gate),
    which the calibration's many small indexes do without."""
    phrasings = indexed_texts(entries)
    vocabulary = (
        list(dict.fromkeys(w for e in entries for w in entry_words(e)))
        if words and encoder is not None
        else []
    )
    word_vectors = encoder.encode(vocabulary) if vocabulary else []
    vectors = encoder.encode([text for _, text, _ in phrasings]) if encoder is not None else []
    # Plain executemany: calibration (chatbot.faq.calibration) builds hundreds of these.
    with db.conn:
        db.execute(
            "CREATE VIRTUAL TABLE faq_fts USING fts5("
            f"question, alternates, answer, faq_id UNINDEXED, tokenize='{TOKENIZER}')"
        )
        db.conn.executemany(
            "INSERT INTO faq_fts (question, alternates, answer, faq_id) VALUES (?, ?, ?, ?)",
            [(e.question, "\n".join(e.alternates), e.answer, e.id) for e in entries],
        )
        db.execute("CREATE TABLE vectors (faq_id TEXT, text TEXT, vector BLOB, credit FLOAT)")
        db.conn.executemany(
            "INSERT INTO vectors (faq_id, text, vector, credit) VALUES (?, ?, ?, ?)",
            [
                (faq_id, text, vector.astype(np.float32).tobytes(), credit)
                for (faq_id, text, credit), vector in zip(phrasings, vectors, strict=False)
            ],
        )
        db.execute("CREATE TABLE words (word TEXT PRIMARY KEY, vector BLOB)")
        db.conn.executemany(
            "INSERT INTO words (word, vector) VALUES (?, ?)",
            [
                (w, v.astype(np.float32).tobytes())
                for w, v in zip(vocabulary, word_vectors, strict=True)
            ],
        )
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(stamp.items()))
