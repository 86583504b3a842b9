"""End to end on the real SmolLM2-135M-Instruct: the converted GGUF computes what transformers does.

Logits and perplexity are compared on the same token ids (tokenized once by the GGUF, fed to both),
on the held-out text that nothing in the project calibrates or tunes on.
"""

import numpy as np
import pytest

from converter.evaluate import (
    DEFAULT_EVAL_TEXT,
    PERPLEXITY_CTX,
    GgufLogits,
    gguf_perplexity,
    hf_logits_fn,
    perplexity,
    token_windows,
    tokenize_gguf,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def heldout_text() -> str:
    return DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf_logits(smollm2_checkpoint):
    """transformers in float32: the reference every GGUF is measured against."""
    return hf_logits_fn(smollm2_checkpoint)


def test_f32_logits_match_transformers(smollm2_gguf, hf_logits, heldout_text, measurement):
    path = smollm2_gguf("F32")
    window = token_windows(tokenize_gguf(path, heldout_text), PERPLEXITY_CTX)[0]
    gguf = GgufLogits(path, PERPLEXITY_CTX)
    try:
        ours = gguf(window)
    finally:
        gguf.close()
    theirs = hf_logits(window)

    assert ours.shape == theirs.shape == (len(window), 49152)
    agreement = float((ours.argmax(axis=1) == theirs.argmax(axis=1)).mean())
    max_diff = float(np.abs(ours - theirs).max())
    line = (
        f"F32 GGUF vs transformers on {len(window)} tokens: top-1 agreement {agreement:.2%}, "
        f"max |logit diff| {max_diff:.4f}"
    )
    measurement(line)
    assert agreement >= 0.99, line
    assert max_diff < 0.25, line


def test_perplexity_f16_and_q4_k_m(smollm2_gguf, hf_logits, heldout_text, measurement):
    f16, q4 = smollm2_gguf("F16"), smollm2_gguf("Q4_K_M")
    tokens = tokenize_gguf(f16, heldout_text)
    assert tokenize_gguf(q4, heldout_text) == tokens

    reference = perplexity(hf_logits, tokens, PERPLEXITY_CTX)
    ppl_f16 = gguf_perplexity(f16, tokens, PERPLEXITY_CTX)
    ppl_q4 = gguf_perplexity(q4, tokens, PERPLEXITY_CTX)

    assert ppl_f16.n_scored == ppl_q4.n_scored == reference.n_scored >= 2000
    line = (
        f"perplexity on {reference.n_scored} tokens ({reference.n_windows} windows of "
        f"{reference.ctx}): transformers fp32 {reference.value:.3f}, F16 {ppl_f16.value:.3f} "
        f"({ppl_f16.value / reference.value - 1:+.2%}), Q4_K_M {ppl_q4.value:.3f} "
        f"({ppl_q4.value / ppl_f16.value - 1:+.2%} vs F16), file sizes "
        f"F16 {f16.stat().st_size / 1e6:.1f} MB, Q4_K_M {q4.stat().st_size / 1e6:.1f} MB"
    )
    measurement(line)
    assert abs(ppl_f16.value / reference.value - 1) < 0.005, line
    assert ppl_q4.value / ppl_f16.value - 1 < 0.06, line
