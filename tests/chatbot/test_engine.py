"""The embedded llama.cpp engine: bad model files, streaming, KV-cache reuse, stopping, logging."""

import os
import subprocess
import sys
import textwrap

import pytest

from chatbot.engines.base import GenerationOptions, GenerationStats, TextChunk
from chatbot.engines.llama import LlamaEngine, quantization_name
from chatbot.errors import EngineError, ModelLoadError

GREEDY = GenerationOptions(max_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = LlamaEngine(tiny_gguf, n_ctx=512, n_threads=1)
    yield e
    e.close()


def run(engine, messages, options=GREEDY, should_stop=lambda: False):
    items = list(engine.stream(messages, options, should_stop))
    assert all(isinstance(i, TextChunk) for i in items[:-1])
    assert isinstance(items[-1], GenerationStats)
    return "".join(i.text for i in items[:-1]), items[-1]


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found.*--model"):
        LlamaEngine(tmp_path / "nope.gguf")


def test_directory_as_model(tmp_path):
    with pytest.raises(ModelLoadError, match="is a folder"):
        LlamaEngine(tmp_path)


def test_random_bytes_named_gguf(tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        LlamaEngine(junk)


def test_truncated_gguf_reports_llama_cpp_reason(tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="cannot load .*convert it again"):
        LlamaEngine(cut)


def test_info_reports_file_quantization_and_threads(engine, tiny_gguf):
    assert engine.info.model == tiny_gguf.name
    assert engine.info.quantization == "F32"
    assert engine.info.threads == 1 and engine.info.n_ctx == 512
    assert engine.info.backend.startswith("llama.cpp")


def test_threads_default_to_the_idle_cores_and_adapt(tiny_gguf):
    """No --threads: the cores idle now, tuned while generating (tests/chatbot/test_threads.py)."""
    e = LlamaEngine(tiny_gguf, n_ctx=128)
    assert 1 <= e.info.threads <= os.cpu_count() and not e.tuner.fixed
    e.close()


@pytest.mark.parametrize(
    ("file_type", "name"),
    [("0", "F32"), ("1", "F16"), ("7", "Q8_0"), ("15", "Q4_K_M"), ("3", "Q4_1"), (None, "unknown")],
)
def test_quantization_name_from_general_file_type(file_type, name):
    metadata = {} if file_type is None else {"general.file_type": file_type}
    assert quantization_name(metadata) == name


def test_count_tokens_renders_the_chat_template(engine):
    messages = [{"role": "user", "content": "hello"}]
    prompt = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    expected = engine.llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert engine.tokens(messages) == expected
    assert engine.count_tokens(messages) == len(expected)
    assert expected[0] == engine.llm.token_bos()  # <|im_start|> parsed as one special token


def test_stream_yields_chunks_then_stats(engine):
    text, stats = run(engine, [{"role": "user", "content": "hi"}])
    assert stats.completion_tokens <= 8 and stats.stop_reason in ("stop", "length")
    assert stats.prompt_tokens == engine.count_tokens([{"role": "user", "content": "hi"}])
    assert stats.ttft_ms > 0 and stats.total_ms >= stats.ttft_ms
    if stats.completion_tokens > 1:
        assert stats.decode_tps > 0


def test_seeded_sampling_repeats(engine):
    opts = GenerationOptions(max_tokens=12, temperature=1.0, seed=42)
    first, _ = run(engine, [{"role": "user", "content": "seed"}], opts)
    engine.llm.reset()
    second, _ = run(engine, [{"role": "user", "content": "seed"}], opts)
    assert first == second


def test_growing_conversation_reuses_the_kv_cache(engine):
    engine.llm.reset()
    turn1 = [{"role": "system", "content": "sys"}, {"role": "user", "content": "first question"}]
    answer, stats1 = run(engine, turn1)
    assert stats1.cached_tokens == 0
    turn2 = [*turn1, {"role": "assistant", "content": answer},
             {"role": "user", "content": "second"}]  # fmt: skip
    _, stats2 = run(engine, turn2)
    # Everything up to the first turn's prompt is reused; only the new tokens are evaluated.
    assert stats2.cached_tokens >= stats1.prompt_tokens
    assert stats2.prompt_tokens > stats2.cached_tokens
    _, stats3 = run(engine, turn2)  # the same prompt again: all but the last token reused
    assert stats3.cached_tokens >= stats2.prompt_tokens - 1


def test_should_stop_cancels_after_a_few_tokens(engine):
    seen = []

    def stop():
        seen.append(1)
        return len(seen) > 3

    _, stats = run(engine, [{"role": "user", "content": "go"}],
                   GenerationOptions(max_tokens=100, temperature=1.0, seed=1), stop)  # fmt: skip
    assert stats.stop_reason == "cancelled"
    assert stats.completion_tokens <= 3


def test_prompt_longer_than_the_context_is_an_engine_error(tiny_gguf):
    small = LlamaEngine(tiny_gguf, n_ctx=256, n_threads=1)  # llama.cpp's minimum
    with pytest.raises(EngineError, match="context holds 256"):
        run(small, [{"role": "user", "content": "x" * 500}])
    small.close()


def test_reply_is_cut_at_the_end_of_the_context(tiny_gguf):
    small = LlamaEngine(tiny_gguf, n_ctx=256, n_threads=1)  # llama.cpp's minimum
    messages = [{"role": "user", "content": "y" * 200}]
    _, stats = run(small, messages, GenerationOptions(max_tokens=500, temperature=1.0, seed=3))
    assert stats.prompt_tokens + stats.completion_tokens <= 256
    small.close()


QUIET = textwrap.dedent(
    """
    import sys
    from chatbot.engines.base import GenerationOptions
    from chatbot.engines.llama import LlamaEngine
    e = LlamaEngine(sys.argv[1], n_ctx=128, n_threads=1)
    list(e.stream([{"role": "user", "content": "hi"}], GenerationOptions(max_tokens=4)))
    e.close()
    try:
        LlamaEngine(sys.argv[2])
    except Exception:
        pass
    """
)


def test_llama_cpp_never_writes_to_the_terminal(tiny_gguf, tmp_path):
    """Loading, generating and a failed load print nothing on fds 1 and 2 (a TUI owns them)."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:5000])
    done = subprocess.run(
        [sys.executable, "-c", QUIET, str(tiny_gguf), str(bad)],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stdout == b"" and done.stderr == b""


@pytest.mark.slow
def test_real_model_answers_and_reuses_cache(real_gguf):
    engine = LlamaEngine(real_gguf, n_ctx=1024, n_threads=2)
    assert engine.info.quantization == "Q4_K_M"
    convo = [{"role": "user", "content": "What is the capital of France?"}]
    text, stats = run(engine, convo, GenerationOptions(max_tokens=16, temperature=0.0))
    assert text.strip() and "\x00" not in text
    convo += [{"role": "assistant", "content": text}, {"role": "user", "content": "Why?"}]
    _, stats2 = run(engine, convo, GenerationOptions(max_tokens=4, temperature=0.0))
    assert stats2.cached_tokens >= stats.prompt_tokens
    engine.close()
