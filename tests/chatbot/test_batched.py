"""The batched engine: several callers at once in one llama.cpp context, slots, saved states."""

import threading
import time

import llama_cpp
import numpy as np
import pytest

from chatbot.engines.base import GenerationOptions, GenerationStats, TextChunk
from chatbot.engines.batched import BatchedEngine
from chatbot.engines.kv_cache import KVCache
from chatbot.engines.llama import LlamaEngine, load_llama
from chatbot.errors import EngineError

GREEDY = GenerationOptions(max_tokens=24, temperature=0.0)
QUESTIONS = [
    "Where is my parcel? I ordered it last week.",
    "How do I return a kettle that arrived broken?",
    "Can I change my delivery address after ordering?",
    "Do you ship to Canada, and how long does it take?",
]


def convo(text):
    return [{"role": "user", "content": text}]


def run(engine, messages, options=GREEDY, should_stop=lambda: False):
    items = list(engine.stream(messages, options, should_stop))
    assert all(isinstance(i, TextChunk) for i in items[:-1])
    assert isinstance(items[-1], GenerationStats)
    return "".join(i.text for i in items[:-1]), items[-1]


def run_together(engine, conversations, options=GREEDY):
    """Every conversation streamed from its own thread, started together."""
    results = [None] * len(conversations)
    start = threading.Barrier(len(conversations))

    def one(i):
        start.wait()
        results[i] = run(engine, conversations[i], options)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conversations))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = BatchedEngine(tiny_gguf, n_ctx=512, n_threads=1, parallel=4)
    yield e
    e.close()


def test_info_is_per_sequence(engine, tiny_gguf):
    assert engine.info.n_ctx == 512 and engine.info.threads == 1
    assert engine.info.model == tiny_gguf.name and engine.info.settings["parallel"] == 4
    assert "4 sequences batched" in engine.info.backend


def test_concurrent_streams_give_the_replies_each_gives_alone(engine, tiny_gguf):
    single = LlamaEngine(tiny_gguf, n_ctx=512, n_threads=1)
    alone = [run(single, convo(q))[0] for q in QUESTIONS]
    seeded = GenerationOptions(max_tokens=24, temperature=0.8, seed=7)
    alone_seeded = run(single, convo(QUESTIONS[0]), seeded)[0]
    single.close()
    together = run_together(engine, [convo(q) for q in QUESTIONS])
    assert [text for text, _ in together] == alone
    assert all(stats.completion_tokens == 24 for _, stats in together)
    assert run(engine, convo(QUESTIONS[0]), seeded)[0] == alone_seeded


def test_more_callers_than_slots_all_get_their_reply(tiny_gguf):
    engine = BatchedEngine(tiny_gguf, n_ctx=512, n_threads=1, parallel=2)
    alone = [run(engine, convo(f"{q} ({n})"))[0] for n, q in enumerate(QUESTIONS * 2)]
    together = run_together(engine, [convo(f"{q} ({n})") for n, q in enumerate(QUESTIONS * 2)])
    engine.close()
    assert [text for text, _ in together] == alone


def test_next_turn_finds_its_history_in_its_slot(engine):
    first = convo("Hello, my order 48213 has not arrived yet, what can I do about it?")
    reply, stats1 = run(engine, first)
    run_together(engine, [convo(q) for q in QUESTIONS[:3]])  # other customers, other slots
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "ok"}]
    _, stats2 = run(engine, second)
    assert stats2.cached_tokens >= stats1.prompt_tokens


def test_one_slot_shared_reloads_the_saved_state(tiny_gguf, tmp_path):
    """Another conversation took the only slot in between: turn 2 loads its state back and the
    reply is the one a full evaluation gives; a new engine finds it on disk."""
    engine = BatchedEngine(
        tiny_gguf, n_ctx=512, n_threads=1, parallel=1, kv_cache=KVCache(tiny_gguf, tmp_path)
    )
    first = convo("Hello, my order 48213 has not arrived yet, what can I do about it?")
    reply, stats1 = run(engine, first)
    run(engine, convo("A different customer with a different question entirely"))
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "ok"}]
    text, stats2 = run(engine, second)
    engine.close()
    assert stats2.cached_tokens >= stats1.prompt_tokens
    fresh = BatchedEngine(tiny_gguf, n_ctx=512, n_threads=1, parallel=1)
    assert run(fresh, second)[0] == text
    fresh.close()
    third = [*second, {"role": "assistant", "content": text}, {"role": "user", "content": "?"}]
    again = BatchedEngine(
        tiny_gguf, n_ctx=512, n_threads=1, parallel=1, kv_cache=KVCache(tiny_gguf, tmp_path)
    )
    _, stats3 = run(again, third)
    again.close()
    assert stats3.cached_tokens >= stats2.prompt_tokens


def test_should_stop_ends_a_reply_and_frees_its_slot(tiny_gguf):
    engine = BatchedEngine(tiny_gguf, n_ctx=512, n_threads=1, parallel=1)
    long = GenerationOptions(max_tokens=400, temperature=0.0)
    seen = []

    def stop():
        return len(seen) >= 3

    for item in engine.stream(convo("Tell me everything."), long, stop):
        seen.append(item)
    assert isinstance(seen[-1], GenerationStats) and seen[-1].stop_reason == "cancelled"
    assert seen[-1].completion_tokens < 400
    _, stats = run(engine, convo("Next customer"))  # the only slot is free again
    assert stats.stop_reason == "length"
    engine.close()


def test_a_reader_that_leaves_frees_its_slot(tiny_gguf):
    engine = BatchedEngine(tiny_gguf, n_ctx=512, n_threads=1, parallel=1)
    stream = engine.stream(convo("Tell me everything."), GenerationOptions(max_tokens=400))
    next(stream)
    stream.close()  # the HTTP client went away
    _, stats = run(engine, convo("Next customer"))
    assert stats.completion_tokens == GREEDY.max_tokens
    engine.close()


def test_prompt_longer_than_one_batch_is_evaluated_in_steps(tiny_gguf):
    """A 700-token prompt takes two llama_batch steps (512 + the rest), beside another reply."""
    engine = BatchedEngine(tiny_gguf, n_ctx=1024, n_threads=1, parallel=2)
    single = LlamaEngine(tiny_gguf, n_ctx=1024, n_threads=1)
    long = convo("z" * 700)
    expected = run(single, long)[0]
    single.close()
    (text, stats), _ = run_together(engine, [long, convo(QUESTIONS[0])])
    engine.close()
    assert stats.prompt_tokens > 700 and text == expected


def test_prompt_longer_than_a_sequence_is_an_engine_error(engine):
    with pytest.raises(EngineError, match="context holds 512"):
        run(engine, convo("word " * 600))


def test_reply_is_cut_at_the_end_of_its_sequence(engine):
    text = "x" * 400
    n = engine.count_tokens(convo(text))
    _, stats = run(engine, convo(text), GenerationOptions(max_tokens=400, temperature=0.0))
    assert stats.stop_reason == "length" and stats.completion_tokens == 512 - n


def test_close_ends_the_reply_and_waiting_callers_with_an_error(tiny_gguf):
    engine = BatchedEngine(tiny_gguf, n_ctx=4096, n_threads=1, parallel=1)
    errors = []

    def caller():
        try:
            run(engine, convo("Tell me everything."), GenerationOptions(4000, temperature=0.0))
        except EngineError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while engine.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.close()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 3
    with pytest.raises(EngineError, match="closed"):
        run(engine, convo("after"))


def greedy_reference(path, messages, n_tokens):
    """Greedy decoding alone, token by token: each token's bytes and its top-2 logit gap."""
    tokenizer = LlamaEngine(path, n_ctx=256, n_threads=1)
    tokens = tokenizer.tokens(messages)
    tokenizer.close()
    llm = load_llama(path, n_ctx=1024, n_threads=2, n_threads_batch=2)
    llm.eval(tokens)
    pieces, gaps = [], []
    for _ in range(n_tokens):
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(logits, (llm.n_vocab(),))
        second, best = (int(t) for t in np.argsort(logits)[-2:])
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, best):
            break
        pieces.append(llm.detokenize([best]))
        gaps.append(float(logits[best] - logits[second]))
        llm.eval([best])
    llm.close()
    return pieces, gaps


def first_difference(a, b):
    pairs = enumerate(zip(a, b, strict=False))
    return next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


def text_of(pieces, k):
    return b"".join(pieces[:k]).decode("utf-8", errors="replace")


@pytest.mark.slow
def test_real_model_concurrent_replies_match_alone_but_at_near_ties(real_gguf, measurement):
    """llama.cpp's CPU matmuls sum in another order for another batch size, so a greedy reply
    decoded beside others may take the other branch where the top two logits (nearly) tie. A
    mix-up of sequences would diverge at a clear winner."""
    options = GenerationOptions(max_tokens=40, temperature=0.0)
    engine = BatchedEngine(real_gguf, n_ctx=1024, n_threads=2, parallel=4)
    alone = [run(engine, convo(q), options)[0] for q in QUESTIONS]
    engine.close()
    engine = BatchedEngine(real_gguf, n_ctx=1024, n_threads=2, parallel=4)  # nothing cached
    together = run_together(engine, [convo(q) for q in QUESTIONS], options)
    engine.close()
    identical = 0
    for question, (text, _), single in zip(QUESTIONS, together, alone, strict=True):
        pieces, gaps = greedy_reference(real_gguf, convo(question), 40)
        assert text_of(pieces, len(pieces)) == single  # the engine alone decodes as llama.cpp does
        if text == single:
            identical += 1
            continue
        at = first_difference(text, single)
        token = next(k for k in range(len(pieces)) if len(text_of(pieces, k + 1)) > at)
        # A near tie: Q4_K_M's batched and single-row kernels differ by up to a few tenths of
        # a logit (0.256 seen on a loaded machine, where batches form differently); a mix-up
        # of sequences diverges where one token leads by whole logits.
        assert gaps[token] < 0.5, (question, text, single, gaps[token])
    measurement(f"{identical}/4 concurrent greedy replies identical to alone")
