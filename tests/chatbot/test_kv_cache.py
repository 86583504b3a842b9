"""Saved KV states: prefix matching, bounds, files, and reuse by the engine and `chatbot ask`."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from chatbot.engines.base import GenerationOptions, GenerationStats, TextChunk
from chatbot.engines.kv_cache import KVCache
from chatbot.engines.llama import LlamaEngine

GREEDY = GenerationOptions(max_tokens=12, temperature=0.0)
SYSTEM = {"role": "system", "content": "You are the help desk of a small shop selling kettles."}


def run(engine, messages, options=GREEDY):
    items = list(engine.stream(messages, options))
    assert isinstance(items[-1], GenerationStats)
    return "".join(i.text for i in items if isinstance(i, TextChunk)), items[-1]


def files(folder):
    return sorted(folder.rglob("*.kv"))


@pytest.fixture
def cache(tiny_gguf, tmp_path):
    c = KVCache(tiny_gguf, tmp_path / "kv", min_tokens=4)
    yield c
    c.close()


def test_longest_common_prefix_wins_and_the_last_token_is_left(cache):
    cache.store(list(range(10)), 6, b"short")
    cache.store([*range(8), 99, 98, 97], 8, b"forked")
    hit = cache.lookup([*range(8), 99, 98, 97])
    assert hit.state.data == b"forked" and hit.common == 10  # all but the last token
    hit = cache.lookup([*range(10), 5, 5])
    assert hit.state.data == b"short" and hit.common == 10
    assert cache.lookup([7, 7, 7, 7, 7]) is None
    assert cache.lookup([0, 1, 2, 50]) is None  # 3 tokens in common: under min_tokens


def test_an_entry_that_begins_a_newer_one_is_dropped(cache, tmp_path):
    cache.store(list(range(10)), 6, b"turn 1")
    cache.store(list(range(20)), 15, b"turn 2")
    cache.flush()
    assert cache.lookup(list(range(12))).state.data == b"turn 2"
    assert len(files(tmp_path / "kv")) == 1


def test_memory_bound_evicts_least_recently_used(tiny_gguf, tmp_path):
    cache = KVCache(tiny_gguf, tmp_path / "kv", ram_bytes=250, min_tokens=4)
    for n in range(3):
        cache.store([n, *range(10)], 10, bytes([n]) * 100)
    cache.lookup([0, *range(10), 1])  # absent from memory: read back from disk
    cache.close()
    assert len(cache._ram) == 2 and cache._ram_used <= 250


def test_states_reach_the_disk_when_memory_evicts_them_or_at_close(tiny_gguf, tmp_path):
    cache = KVCache(tiny_gguf, tmp_path / "kv", ram_bytes=150, min_tokens=4)
    cache.store([1, *range(10)], 10, b"a" * 100)
    time.sleep(0.2)
    assert files(tmp_path / "kv") == []  # in memory only: no write a turn
    cache.store([2, *range(10)], 10, b"b" * 100)  # over the bound: the first is written
    deadline = time.monotonic() + 10
    while not files(tmp_path / "kv") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(files(tmp_path / "kv")) == 1
    assert cache.lookup([1, *range(10), 7]).state.data == b"a" * 100
    cache.close()
    assert len(files(tmp_path / "kv")) == 2


def test_disk_bound_covers_every_model_folder(tiny_gguf, tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes())
    a = KVCache(tiny_gguf, tmp_path / "kv", disk_bytes=3000, min_tokens=4)
    b = KVCache(other, tmp_path / "kv", disk_bytes=3000, min_tokens=4)
    for n in range(3):
        a.store([n, *range(10)], 10, b"a" * 1000)
        a.flush()
        b.store([n, *range(10)], 10, b"b" * 1000)
        b.flush()
    a.close()
    b.close()
    kept = files(tmp_path / "kv")
    assert 0 < len(kept) <= 2 and sum(p.stat().st_size for p in kept) <= 3000


def test_files_are_user_only_and_found_by_a_new_instance(tiny_gguf, cache, tmp_path):
    cache.store(list(range(30)), 20, b"\x01" * 64)
    cache.close()
    (path,) = files(tmp_path / "kv")
    assert path.stat().st_mode & 0o777 == 0o600
    again = KVCache(tiny_gguf, tmp_path / "kv", min_tokens=4)
    hit = again.lookup(list(range(40)))
    assert hit.common == 30 and hit.state.data == b"\x01" * 64 and hit.state.prompt_len == 20
    assert hit.state.tokens.dtype == np.int32


def test_a_changed_model_file_reuses_nothing(tiny_gguf, tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    first = KVCache(model, tmp_path / "kv", min_tokens=4)
    first.store(list(range(30)), 20, b"state")
    first.close()
    model.write_bytes(tiny_gguf.read_bytes() + b"\0")  # another file under the same name
    assert KVCache(model, tmp_path / "kv", min_tokens=4).lookup(list(range(40))) is None


def test_damaged_files_are_ignored(tiny_gguf, cache, tmp_path):
    cache.store(list(range(30)), 20, b"state")
    cache.close()
    (path,) = files(tmp_path / "kv")
    path.write_bytes(path.read_bytes()[:20])
    (path.parent / "junk.kv").write_bytes(os.urandom(100))
    assert KVCache(tiny_gguf, tmp_path / "kv", min_tokens=4).lookup(list(range(40))) is None


def test_second_turn_after_another_conversation_reuses_its_saved_state(tiny_gguf, tmp_path):
    """One context, two conversations in turn: turn 2 of the first loads its state back, and
    the reply is the one a full evaluation gives."""
    cache = KVCache(tiny_gguf, tmp_path / "kv")
    engine = LlamaEngine(tiny_gguf, n_ctx=1024, n_threads=1, kv_cache=cache)
    first = [SYSTEM, {"role": "user", "content": "Where is my parcel?"}]
    reply, stats1 = run(engine, first)
    run(engine, [{"role": "user", "content": "A different customer, a different question"}])
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "Ok"}]
    text, stats2 = run(engine, second)
    engine.close()
    assert stats2.cached_tokens >= stats1.prompt_tokens
    fresh = LlamaEngine(tiny_gguf, n_ctx=1024, n_threads=1)
    expected, stats = run(fresh, second)
    fresh.close()
    assert stats.cached_tokens == 0 and text == expected


def ask(tiny_gguf, tmp_path, *extra):
    config = tmp_path / "config.toml"
    config.touch()
    env = {
        **os.environ,
        "CHATBOT_CACHE_DIR": str(tmp_path / "cache"),
        "CHATBOT_CONFIG": str(config),
    }
    done = subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "ask", *extra, "--model", str(tiny_gguf)]
        + ["--db", str(tmp_path / "chat.db"), "--ctx", "512", "--threads", "1", "--json"]
        + ["--max-tokens", "8", "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ask_conversation_in_a_new_process_reuses_the_saved_state(tiny_gguf, tmp_path):
    turn1 = ask(tiny_gguf, tmp_path, "Hello, I need help with an order from last week.")
    assert turn1["cached_tokens"] == 0
    conversation = str(turn1["conversation_id"])
    turn2 = ask(tiny_gguf, tmp_path, "It is order 48213.", "--conversation", conversation)
    assert turn2["cached_tokens"] >= turn1["prompt_tokens"]
    saved = files(tmp_path / "kv")  # CHATBOT_KV_DIR (tests/conftest.py)
    assert saved and all(p.stat().st_mode & 0o777 == 0o600 for p in saved)


@pytest.mark.slow
def test_real_model_conversation_resumes_from_disk_in_a_new_engine(real_gguf, tmp_path):
    """SmolLM2: turn 2 of a conversation in a new engine (as a new process would) evaluates only
    the new message; the saved state is the model's own (a sane reply follows it)."""
    first = [SYSTEM, {"role": "user", "content": "Hi! My kettle arrived broken. What can I do?"}]
    engine = LlamaEngine(real_gguf, n_ctx=1024, n_threads=2, kv_cache=KVCache(real_gguf, tmp_path))
    reply, stats1 = run(engine, first, GenerationOptions(max_tokens=32, temperature=0.0))
    engine.close()
    second = [*first, {"role": "assistant", "content": reply}]
    second.append({"role": "user", "content": "Can I get a refund instead?"})
    engine = LlamaEngine(real_gguf, n_ctx=1024, n_threads=2, kv_cache=KVCache(real_gguf, tmp_path))
    text, stats2 = run(engine, second, GenerationOptions(max_tokens=32, temperature=0.0))
    engine.close()
    assert stats2.cached_tokens >= stats1.prompt_tokens
    assert stats2.prompt_tokens - stats2.cached_tokens < 40  # the new message and its markers
    assert len(text.split()) >= 3 and "\x00" not in text
