"""The remote engine against real servers on 127.0.0.1: llama-cpp-python's, and tiny local ones.

The slow tests start `python -m llama_cpp.server` with the real SmolLM2 model once per session
and check that `chatbot ask --server` answers exactly like the embedded engine at temperature 0.
The fast ones run a small http.server that answers what a broken or different server would
(HTTP 500, HTML, malformed events, silence, vLLM-style usage) and check the one-line error, the
exit code 2 and that the user's message is still in the database.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatbot.conversation.session import Session
from chatbot.engines.base import GenerationOptions, GenerationStats, TextChunk
from chatbot.engines.remote import RemoteEngine
from chatbot.errors import EngineError
from chatbot.store.store import Store
from tests.chatbot.http_stub import (
    Route,
    chatbot,
    delta,
    free_port,
    saved_messages,
    sse,
    stub_server,
)

QUESTION = "What is the capital of France?"
THREADS = 2  # the same for the server and the embedded engine, so the arithmetic is the same
SERVER_START_TIMEOUT_S = 180

# --- the real server, real model -------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_path(smollm2_gguf) -> Path:
    return smollm2_gguf("Q4_K_M")


@pytest.fixture(scope="session")
def llama_server(smollm2_path, tmp_path_factory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2, on a free 127.0.0.1 port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    command += ["--n_threads", str(THREADS), "--verbose", "false"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the server exited; see {log.name}"
            assert time.monotonic() < deadline, f"the server did not start; see {log.name}"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_ask_server_replies_like_the_embedded_engine(
    llama_server, smollm2_path, tmp_path, measurement
):
    common = ["--temperature", "0", "--max-tokens", "48", "--threads", str(THREADS)]
    local_db, db = tmp_path / "embedded.db", tmp_path / "remote.db"
    embedded = chatbot("ask", QUESTION, "--model", str(smollm2_path), "--db", local_db, *common)
    remote = chatbot("ask", QUESTION, "--server", llama_server, "--db", str(db), *common)
    assert embedded.returncode == 0, embedded.stderr
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout.strip() and remote.stdout == embedded.stdout
    saved = saved_messages(db)
    assert saved == saved_messages(local_db) and saved[0] == ("user", QUESTION)
    # Saved as streamed, or without the repeat when the session cut a loop.
    assert saved[1][0] == "assistant" and remote.stdout.startswith(saved[1][1])
    store = Store(db)
    try:
        (turn,) = store.turns()
    finally:
        store.close()
    assert turn.completion_tokens > 0 and 0 < turn.ttft_ms <= turn.total_ms
    assert turn.quantization == "remote" and turn.model_file.endswith(smollm2_path.name)
    assert turn.stop_reason in ("stop", "length", "repetition")
    measurement(
        f"remote (llama-cpp-python server, {THREADS} threads): time to first token "
        f"{turn.ttft_ms:.0f} ms, {turn.decode_tps:.1f} tok/s, reply identical to the embedded one"
    )


@pytest.mark.slow
def test_remote_engine_streams_counts_and_stops(llama_server):
    engine = RemoteEngine(llama_server)
    messages = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    try:
        assert engine.info.backend == f"remote {llama_server}"
        assert engine.count_tokens(messages) > 10  # the server's own tokenizer
        items = list(engine.stream(messages, GenerationOptions(max_tokens=24, temperature=0)))
        chunks, stats = items[:-1], items[-1]
        assert len(chunks) > 1 and all(isinstance(c, TextChunk) for c in chunks)
        assert isinstance(stats, GenerationStats) and stats.stop_reason == "length"
        assert stats.completion_tokens == 24 and stats.decode_tps > 0
        received: list[object] = []
        for item in engine.stream(
            messages, GenerationOptions(max_tokens=200), lambda: len(received) >= 3
        ):
            received.append(item)
    finally:
        engine.close()
    assert len(received) == 4  # three chunks, then the stats of a stopped reply
    assert received[-1].stop_reason == "cancelled" and received[-1].completion_tokens == 3


# --- servers that fail, or answer differently ------------------------------------------------


def test_server_down_is_one_clear_error_and_the_message_is_kept(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    db = tmp_path / "chat.db"
    done = chatbot("ask", "Is my order shipped?", "--server", url, "--db", str(db))
    assert done.returncode == 2
    assert done.stderr == f"error: cannot reach {url}: connection refused; is the server running?\n"
    assert done.stdout == ""
    assert saved_messages(db) == [("user", "Is my order shipped?")]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            (500, "application/json", b'{"error": {"message": "model exploded"}}', 0.0),
            "answered HTTP 500: model exploded",
        ),
        (
            (200, "text/html", b"<html><body>It works!</body></html>", 0.0),
            "did not answer with an OpenAI-compatible event stream",
        ),
        (
            (200, "text/event-stream", b'data: {"choices": [\n\n', 0.0),
            "sent a malformed event stream",
        ),
        (
            (200, "text/event-stream", sse({"error": {"message": "out of memory"}}), 0.0),
            "reported an error: out of memory",
        ),
    ],
    ids=["http-500", "html", "malformed", "error-event"],
)
def test_server_errors_are_one_clear_line_and_the_message_is_kept(tmp_path, route, message):
    db = tmp_path / "chat.db"
    with stub_server({"/v1/chat/completions": route}) as (url, _):
        done = chatbot("ask", "Where is my refund?", "--server", url, "--db", str(db))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {url} ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert saved_messages(db) == [("user", "Where is my refund?")]


def test_a_stream_cut_short_keeps_both_messages(tmp_path):
    cut = (
        200,
        "text/event-stream",
        b"".join(sse(delta("Your refund")).split(b"data: [DONE]")),
        0.0,
    )
    db = tmp_path / "chat.db"
    with stub_server({"/v1/chat/completions": cut}) as (url, _):
        done = chatbot("ask", "Where is my refund?", "--server", url, "--db", str(db))
    assert done.returncode == 2
    assert done.stderr == f"error: {url} ended the reply stream before the reply was complete\n"
    assert done.stdout == "Your refund"  # streamed as it came
    store = Store(db)
    (conversation,) = store.list_conversations()
    messages = store.messages(conversation.id)
    store.close()
    assert [(m.role, m.content, m.stopped) for m in messages] == [
        ("user", "Where is my refund?", False),
        ("assistant", "Your refund", True),
    ]


def test_a_silent_server_times_out(tmp_path):
    slow = (200, "text/event-stream", sse(delta("late")), 3.0)
    with stub_server({"/v1/chat/completions": slow}) as (url, _):
        engine = RemoteEngine(url, timeout=0.5)
        with pytest.raises(EngineError, match=r"did not answer the chat completion within 0.5s"):
            list(engine.stream([{"role": "user", "content": "hi"}], GenerationOptions()))
        engine.close()


def test_session_saves_the_message_before_a_failing_remote_turn(tmp_path):
    store = Store(tmp_path / "chat.db")
    engine = RemoteEngine(f"http://127.0.0.1:{free_port()}")
    session = Session(engine, store)
    with pytest.raises(EngineError, match="connection refused"):
        list(session.send("My parcel is late"))
    messages = store.messages(session.conversation_id)
    store.close()
    assert [(m.role, m.content) for m in messages] == [("user", "My parcel is late")]


def test_vllm_style_usage_and_model_list(tmp_path):
    """vLLM lists max_model_len and sends usage (with cached tokens) in a last event."""
    models = {"data": [{"id": "org/model-7b", "object": "model", "max_model_len": 8192}]}
    usage = {"prompt_tokens": 11, "completion_tokens": 3}
    usage["prompt_tokens_details"] = {"cached_tokens": 8}
    routes: dict[str, Route] = {
        "/v1/models": (200, "application/json", json.dumps(models).encode(), 0.0),
        "/tokenize": (200, "application/json", b'{"count": 4, "tokens": [1, 2, 3, 4]}', 0.0),
        "/v1/chat/completions": (
            200,
            "text/event-stream",
            sse(delta("Hel"), delta("lo"), delta("!", "stop"), {"choices": [], "usage": usage}),
            0.0,
        ),
    }
    with stub_server(routes) as (url, seen):
        engine = RemoteEngine(url + "/v1/")
        messages = [{"role": "user", "content": "hi"}]
        options = GenerationOptions(max_tokens=7, temperature=0.0, seed=3)
        items = list(engine.stream(messages, options))
        count = engine.count_tokens(messages)
        engine.close()
    assert engine.info.model == "org/model-7b" and engine.info.n_ctx == 8192
    assert "".join(i.text for i in items[:-1]) == "Hello!"
    stats = items[-1]
    assert (stats.prompt_tokens, stats.cached_tokens, stats.completion_tokens) == (11, 8, 3)
    assert stats.stop_reason == "stop" and stats.ttft_ms > 0
    assert count == 4 + 2 * 6  # the server's count plus template overhead per message and reply
    (request,) = [json.loads(r.body) for r in seen if r.path.endswith("completions")]
    assert request["model"] == "org/model-7b" and request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert (request["max_tokens"], request["temperature"], request["seed"]) == (7, 0.0, 3)


def test_a_server_without_tokenizer_gets_an_estimate(tmp_path):
    with stub_server({}) as (url, seen):
        engine = RemoteEngine(url, model="m", n_ctx=1024)
        first = engine.count_tokens([{"role": "user", "content": "x" * 300}])
        engine.count_tokens([{"role": "user", "content": "another"}])
        engine.close()
    assert first == 300 // 3 + 1 + 2 * 6
    assert engine.info.n_ctx == 1024 and engine.info.model == "m"
    # Both tokenize endpoints were tried once, then the estimate is used without asking again.
    assert [r.path for r in seen] == ["/v1/models", "/tokenize", "/extras/tokenize/count"]


def test_bad_url_is_a_clear_error():
    with pytest.raises(EngineError, match="invalid server URL"):
        list(RemoteEngine("ftp://127.0.0.1:1").stream([], GenerationOptions()))
