"""The answer check: does the best entry answer the question, or is it only on its topic?

A near-topic question the FAQ does not cover ("Can I reuse an old password?", "Do you take
PayPal?") scores as high against its topic's entry as a true paraphrase does: the sentence
score measures topic, not answer. What gives it away is a word of the question that nothing in
the entry explains (reuse, PayPal). So for the best entry the check looks at each content word
of the question: its closest word in the entry's question, alternates and answer (the same
word, or its nearest by the sentence encoder's vectors), weighted by how rare it is in the
knowledge base. A logistic model over these and the scores decides "answer" or "ask back".

The model is trained by bench/train_answer_gate.py on labelled questions of eight knowledge
bases kept for training only (data/eval/README_more_domains.md), and its cut is set so that
few of their uncovered questions pass. It is measured on the other knowledge bases
(bench/faq_bench.py); it is not used when --faq-confidence sets the threshold by hand.
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from chatbot.faq.index import bm25_idf
from converter.files import atomic_write_text
from converter.paths import PROJECT_DATA

GATE_FILE = PROJECT_DATA / "models" / "answer_gate.json"
FEATURES = (
    "score",  # the best entry's score
    "runner_up",  # the next entry's
    "lead",  # the difference
    "answer_threshold",  # the knowledge base's calibrated answer threshold
    "above_threshold",  # score minus that threshold
    "worst_word",  # the question's least explained word: its similarity to the entry's closest
    "mean_word",  # the mean of those similarities
    "words_below_half",  # how many words are explained less than 0.5
    "words_below_0_6",  # ... less than 0.6
    "unexplained_share",  # the rarity-weighted share of the question that is not explained
    "most_unexplained",  # the rarest unexplained word's weight
    "words",  # how many content words the question has
)
STEM = 5  # words sharing their first five letters count as the same word (refund, refunds)


@dataclass(frozen=True)
class WordMatch:
    """A question's content words against one entry's words (see the module docstring)."""

    similarity: np.ndarray  # per question word: its best similarity in the entry (1 = the word)
    weight: np.ndarray  # per question word: how rare it is in the knowledge base (bm25's idf)


def word_match(
    question_words: Sequence[str],
    entry_words: Sequence[str],
    vectors: Callable[[Sequence[str]], np.ndarray],
    entries_with: Callable[[str], int],
    entries: int,
) -> WordMatch:
    """How well the entry's words explain each of the question's words."""
    words = list(question_words) or ["question"]  # only function words: weigh a stand-in
    found = vectors(words) @ vectors(list(entry_words)).T if entry_words else None
    best = found.max(axis=1) if found is not None else np.zeros(len(words))
    for i, word in enumerate(words):
        if any(_same(word, other) for other in entry_words):
            best[i] = 1.0
    weight = np.array([bm25_idf(entries_with(word), entries) for word in words])
    return WordMatch(np.clip(best, 0.0, 1.0), weight)


def features(scores: Sequence[float], answer_threshold: float, match: WordMatch) -> np.ndarray:
    """The model's inputs, in FEATURES order."""
    best, runner_up = scores[0], (scores[1] if len(scores) > 1 else 0.0)
    sim, weight = match.similarity, match.weight
    unexplained = 1.0 - sim
    return np.array(
        [
            best,
            runner_up,
            best - runner_up,
            answer_threshold,
            best - answer_threshold,
            sim.min(),
            sim.mean(),
            float((sim < 0.5).sum()),
            float((sim < 0.6).sum()),
            float((unexplained * weight).sum() / max(weight.sum(), 1e-9)),
            float((unexplained * weight).max()),
            float(len(sim)),
        ]
    )


@dataclass(frozen=True)
class AnswerGate:
    """A logistic model on standardized FEATURES, and the probability it must reach."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    cut: float
    trained_on: str  # which labelled questions, for the file's reader

    def probability(self, x: np.ndarray) -> float:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(1.0 / (1.0 + math.exp(-(float(z @ np.asarray(self.weights)) + self.bias))))

    def passes(self, x: np.ndarray) -> bool:
        return self.probability(x) >= self.cut

    def save(self, path: Path = GATE_FILE) -> None:
        payload = {"features": list(FEATURES), **asdict(self)}
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n", mode=0o644)

    @classmethod
    def load(cls, path: Path = GATE_FILE) -> "AnswerGate | None":
        """The shipped model; None when the file is missing or was written for other inputs."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if payload.pop("features", None) != list(FEATURES):
            return None
        return cls(**payload)


def fit(x: np.ndarray, y: np.ndarray, penalty: float = 1.0) -> tuple[np.ndarray, float, list, list]:
    """L2-penalized logistic regression on standardized inputs (Newton's method).

    Returns the weights, the bias, and the means and scales the inputs were standardized with.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    theta = np.zeros(z.shape[1])
    ridge = np.eye(z.shape[1]) / penalty
    ridge[-1, -1] = 0.0  # the bias is not penalized
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ theta)))
        gradient = z.T @ (p - y) + ridge @ theta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + ridge
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1]), mean.tolist(), scale.tolist()


def _same(word: str, other: str) -> bool:
    long_enough = len(word) >= STEM and len(other) >= STEM
    return word == other or (long_enough and word[:STEM] == other[:STEM])
