"""The FAQ bot's two thresholds, set from the knowledge base itself: no labelled questions.

A company has no labelled customer questions on day one, and a threshold chosen on one FAQ
does not carry to the next (bench/faq_bench.py). So each knowledge base measures its own:
- covered side: every phrasing (question or alternate) of every entry, looked up with that
  phrasing left out of its entry. It is a question the entry covers, worded as nothing in the
  index is: how a paraphrase scores.
- near-topic side: every phrasing looked up with its whole entry left out. It is a question
  on the company's topics that no entry covers: how "Can I pay with bitcoin?" scores.
- far side: a shipped, domain-free set of customer questions on other businesses
  (data/eval/generic_uncovered.jsonl): how an off-topic question scores.
The answer threshold sits above nearly all near-topic and far questions, the hand-off threshold
below nearly all paraphrases; between the two the bot asks back ("Did you mean ...?"). The
quantiles were chosen on the store and helpdesk FAQs with their labelled questions, then
measured, unchanged, on a third FAQ written apart from the code (README, bench/faq_bench.py).
"""

import contextlib
import hashlib
import io
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from chatbot.faq.embed import ENCODER_ID, SentenceEncoder
from chatbot.faq.index import FaqIndex, memory_index, query_terms
from chatbot.faq.load import FaqEntry
from converter.files import atomic_write_bytes
from converter.paths import PROJECT_DATA, cache_dir

GENERIC_QUESTIONS = PROJECT_DATA / "eval" / "generic_uncovered.jsonl"
CALIBRATION_VERSION = "1"  # bump when the rule below changes: stored bands are then redone
# Quantiles of each side (see the module docstring), chosen on the store and helpdesk FAQs.
NEAR_TOPIC_ANSWERED = 0.50  # the answer threshold is above this share of near-topic scores
FAR_ANSWERED = 0.99  # ... and above this share of off-topic ones
FAR_HANDED_OFF = 0.75  # the hand-off threshold is above this share of off-topic scores
COVERED_KEPT = 0.05  # ... but below all but this share of paraphrases
# Bounds that keep a tiny or odd knowledge base from a threshold that makes no sense.
ANSWER_RANGE = (0.40, 0.85)
HANDOFF_RANGE = (0.15, 0.45)
# Each measured entry costs a few small indexes of all the others: a larger knowledge base is
# measured on this many of its entries, spread over it.
MEASURED_ENTRIES = 60
# Without the encoder (words alone), scores are coverage shares: fixed thresholds.
WORDS_ONLY = (0.60, 0.30)
# A question must lead the runner-up by this much to be answered without asking back: two
# entries this close mean the bot cannot tell which one the customer wants.
MARGIN = 0.05


@dataclass(frozen=True)
class Bands:
    """Where the best entry's score puts a question: answer, ask back, or hand off.

    answer: at or above, the bot answers from the best entry (if it leads the next by
    `margin`); below `handoff` it hands off; in between it asks which entry was meant.
    """

    answer: float
    handoff: float
    margin: float
    how: str  # "calibrated on ..." or "set by --faq-confidence", for the start-up line

    def describe(self) -> str:
        return (
            f"FAQ thresholds: answer at {self.answer:.2f} and above, ask back between "
            f"{self.handoff:.2f} and {self.answer:.2f}, hand off below {self.handoff:.2f} "
            f"({self.how})"
        )

    def with_answer(self, answer: float) -> "Bands":
        """The bands with the answer threshold set by hand (--faq-confidence)."""
        handoff = min(self.handoff, answer)
        return replace(self, answer=answer, handoff=handoff, how="answer set by --faq-confidence")


@dataclass(frozen=True)
class Sides:
    """The scores each side of the calibration measured (for the bench and the README)."""

    covered: list[float]
    near_topic: list[float]
    far: list[float]


def calibrated_bands(
    index: FaqIndex, entries: Sequence[FaqEntry], encoder: SentenceEncoder | None
) -> Bands:
    """The knowledge base's bands: stored with its index, measured when the index is new."""
    if encoder is None:
        return Bands(*WORDS_ONLY, MARGIN, how="fixed: matching by words only")
    key = f"bands-{CALIBRATION_VERSION}"
    if (stored := index.meta(key)) is not None:
        return Bands(**json.loads(stored))
    bands = bands_from(measure(entries, index, far_side(encoder)))
    with contextlib.suppress(sqlite3.Error):  # a read-only cache: measured again next time
        index.set_meta(key, json.dumps(asdict(bands)))
    return bands


def far_side(
    encoder: SentenceEncoder, path: Path = GENERIC_QUESTIONS
) -> list[tuple[str, np.ndarray]]:
    """The shipped off-topic questions with their vectors, kept in the cache folder once
    embedded (they are the same for every knowledge base); [] when the file is missing."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    questions = [json.loads(line)["question"] for line in raw.decode().splitlines() if line.strip()]
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cached = cache_dir() / "faq-index" / f"off-topic-{ENCODER_ID}-{digest}.npy"
    try:
        vectors = np.load(cached)
    except (OSError, ValueError):
        vectors = encoder.encode(questions)
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        with contextlib.suppress(OSError):  # no cache folder: embedded again next time
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, buffer.getvalue())
    if len(vectors) != len(questions):
        vectors = encoder.encode(questions)
    return list(zip(questions, vectors, strict=True))


def measure(
    entries: Sequence[FaqEntry], index: FaqIndex, far: Sequence[tuple[str, np.ndarray]]
) -> Sides:
    """Score the three sides. `index` is the knowledge base's own (its vectors are reused)."""
    vectors = index.text_vectors()
    covered, near = [], []
    step = max(1, -(-len(entries) // MEASURED_ENTRIES))  # a large FAQ: every step-th entry
    for n in range(0, len(entries), step):
        entry, others = entries[n], [*entries[:n], *entries[n + 1 :]]
        phrasings = (entry.question, *entry.alternates)
        with memory_index(others, vectors.__getitem__) as without_entry:
            near += [_best(without_entry, text, vectors[text]) for text in phrasings]
        for k, text in enumerate(phrasings):
            kept = _without_phrasing(entry, k)
            if kept is None:
                continue  # a lone question: nothing would be left to match it
            with memory_index([*others, kept], vectors.__getitem__) as without_phrasing:
                covered.append(_own(without_phrasing, text, vectors[text], entry.id))
    return Sides(covered, near, [_best(index, text, vector) for text, vector in far])


def bands_from(sides: Sides) -> Bands:
    """The two thresholds from the measured sides (quantiles, see the module constants)."""
    near = _quantile(sides.near_topic, NEAR_TOPIC_ANSWERED)
    answer = _clip(max(near, _quantile(sides.far, FAR_ANSWERED)), ANSWER_RANGE)
    far = _quantile(sides.far, FAR_HANDED_OFF)
    handoff = _clip(min(far, _quantile(sides.covered, COVERED_KEPT), answer), HANDOFF_RANGE)
    counts = (
        f"{len(sides.covered)} paraphrases, {len(sides.near_topic)} near-topic and "
        f"{len(sides.far)} off-topic questions"
    )
    return Bands(round(answer, 3), round(min(handoff, answer), 3), MARGIN, f"from {counts}")


def _without_phrasing(entry: FaqEntry, k: int) -> FaqEntry | None:
    """The entry with its k-th phrasing (0: the question) left out; None if none is left."""
    phrasings = [entry.question, *entry.alternates]
    del phrasings[k]
    if not phrasings:
        return None
    return replace(entry, question=phrasings[0], alternates=tuple(phrasings[1:]))


def _best(index: FaqIndex, text: str, vector: np.ndarray) -> float:
    found = index.search(query_terms(text), vector, limit=1)
    return found[0].score if found else 0.0


def _own(index: FaqIndex, text: str, vector: np.ndarray, faq_id: str) -> float:
    """The score of the entry the phrasing belongs to (0 if the index did not find it)."""
    for candidate in index.search(query_terms(text), vector, limit=50):
        if candidate.faq_id == faq_id:
            return candidate.score
    return 0.0


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if values else 0.0


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])
