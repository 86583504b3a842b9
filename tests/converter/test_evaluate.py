"""Perplexity the way llama.cpp measures it: exact cases, and a tiny model through both engines."""

import json

import numpy as np
import pytest

from converter.errors import ConverterError
from converter.evaluate import (
    DEFAULT_EVAL_TEXT,
    TokenizedText,
    evaluate,
    gguf_perplexity,
    hf_perplexity,
    perplexity,
    token_windows,
    tokenize_gguf,
)
from converter.options import ConvertOptions
from converter.pipeline import convert
from tests.tiny_models import tiny_model

CTX = 64


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny SentencePiece llama (its tokenizer adds BOS) converted to F32, with its checkpoint."""
    checkpoint = tiny_model("llama-spm")
    out = tmp_path_factory.mktemp("eval") / "tiny-F32.gguf"
    convert(str(checkpoint), out, ConvertOptions(quant="F32"))
    return checkpoint, out


def test_uniform_logits_give_the_vocabulary_size():
    vocab, tokens = 10, TokenizedText(ids=[i % 10 for i in range(3 * CTX + 5)], bos_id=None)
    result = perplexity(lambda ids: np.zeros((len(ids), vocab), np.float32), tokens, CTX)
    # Three full windows (the 5-token tail is dropped); positions ctx/2 .. ctx-2 are scored.
    assert (result.n_windows, result.n_scored, result.ctx) == (3, 3 * (CTX - CTX // 2 - 1), CTX)
    assert result.value == pytest.approx(vocab, rel=1e-12)


def test_only_the_second_half_of_each_window_is_scored():
    """Logits that predict every token perfectly in the second half only: perplexity 1."""
    ids = list(range(2 * CTX))
    tokens = TokenizedText(ids=ids, bos_id=None)

    def oracle(window):
        logits = np.zeros((len(window), 2 * CTX), np.float32)
        start = ids.index(window[1]) - 1
        for pos in range(CTX // 2, CTX - 1):
            logits[pos, ids[start + pos + 1]] = 1e4
        return logits

    assert perplexity(oracle, tokens, CTX).value == pytest.approx(1.0)


def test_windows_start_with_bos_when_the_model_adds_it():
    tokens = TokenizedText(ids=list(range(5, 5 + 2 * CTX)), bos_id=1)
    windows = token_windows(tokens, CTX)
    assert [w[0] for w in windows] == [1, 1]
    assert windows[1][1:] == tokens.ids[CTX + 1 : 2 * CTX]
    assert tokens.ids[0] == 5  # the caller's ids stay as they were


def test_too_short_text_is_a_clear_error():
    with pytest.raises(ConverterError, match="needs at least 64"):
        token_windows(TokenizedText(ids=[1, 2, 3], bos_id=None), CTX)


def test_gguf_and_transformers_agree_on_the_same_windows(tiny_gguf):
    checkpoint, gguf = tiny_gguf
    tokens = tokenize_gguf(gguf, DEFAULT_EVAL_TEXT.read_text(encoding="utf-8"))
    assert tokens.bos_id is not None  # SentencePiece llama: each window starts with BOS
    ours = gguf_perplexity(gguf, tokens, CTX)
    theirs = hf_perplexity(checkpoint, tokens, CTX)
    assert ours.n_scored == theirs.n_scored > 1000
    assert ours.value == pytest.approx(theirs.value, rel=1e-3), (ours, theirs)


def test_evaluate_reports_size_perplexity_and_speed(tiny_gguf):
    _, gguf = tiny_gguf
    result = evaluate(gguf, DEFAULT_EVAL_TEXT.read_text(encoding="utf-8"), ctx=CTX, speed_tokens=16)
    assert result.file_bytes == gguf.stat().st_size
    assert result.perplexity.ctx == CTX and result.perplexity.value > 1
    assert result.tokens_per_s > 0 and result.n_threads >= 1
    assert json.loads(json.dumps(result.to_dict()))["perplexity"]["n_windows"] > 10


def test_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConverterError, match="does not exist"):
        tokenize_gguf(tmp_path / "nope.gguf", "text")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ConverterError, match="could not load"):
        tokenize_gguf(broken, "text")
