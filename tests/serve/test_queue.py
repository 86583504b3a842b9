"""A plain chat server (no FAQ): replies stream token by token; the bounded queue (one reply
running and one waiting fill `--parallel 1 --queue 1`; the next customer gets 503 with
Retry-After); a customer who leaves mid-reply stops it, and the reply so far is saved, marked
stopped, with its latency row."""

import threading
import time

import httpx
import pytest

from tests.serve.conftest import chat, running_server, saved_turns, sse_events

pytestmark = pytest.mark.slow
MAX_TOKENS = 200  # a reply that runs for seconds, while the queue is filled


@pytest.fixture(scope="module")
def server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-queue")
    args = ("--model", str(real_model), "--parallel", "1", "--queue", "1")
    with running_server(folder, *args, "--max-tokens", str(MAX_TOKENS)) as s:
        yield s


def test_streamed_reply_arrives_token_by_token(server):
    question = "Write a sentence about the sea."
    request = chat(question, stream=True, stream_options={"include_usage": True})
    with (
        server.client() as client,
        client.stream("POST", "/v1/chat/completions", json=request) as response,
    ):
        assert response.status_code == 200
        token = response.headers["X-Conversation-Id"]
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    pieces = [
        e["choices"][0]["delta"]["content"]
        for e in events[:-1]
        if e["choices"] and "content" in e["choices"][0]["delta"]
    ]
    assert len(pieces) >= 3  # streamed as generated, not in one piece
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= len(pieces)
    messages, turns = saved_turns(server, token)
    assert [m.content for m in messages] == [question, "".join(pieces)]
    assert len(turns) == 1 and turns[0].completion_tokens == usage["usage"]["completion_tokens"]
    assert (events[-3]["sources"], events[-3]["handoff"]) == ([], False)
    assert events[-3]["answer"] == messages[-1].content  # the reply as saved


def test_full_queue_gets_503_with_retry_after_and_a_left_reply_is_saved_stopped(server):
    long_reply = chat("Count from 1 to 200, separated by commas.", max_tokens=MAX_TOKENS)
    queued: dict[str, httpx.Response] = {}
    with server.client() as first, server.client() as second, server.client() as third:
        with first.stream("POST", "/v1/chat/completions", json={**long_reply, "stream": True}) as r:
            assert r.status_code == 200
            token = r.headers["X-Conversation-Id"]
            _wait_for(first, active=1, waiting=0)
            waiter = threading.Thread(
                target=lambda: queued.update(
                    r=second.post("/v1/chat/completions", json=chat("Hi!", max_tokens=4))
                )
            )
            waiter.start()
            _wait_for(first, active=1, waiting=1)
            refused = third.post("/v1/chat/completions", json=chat("Hello?"))
            assert _wait_for(first, active=1, waiting=1)  # the first reply is still running
        # The first customer has gone: the server stops that reply and serves the next one.
        waiter.join(timeout=120)
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "busy" in refused.json()["error"]["message"]
    assert queued["r"].status_code == 200
    messages, turns = saved_turns(server, token)
    assert messages[-1].role == "assistant" and messages[-1].stopped
    assert turns[-1].stop_reason == "cancelled" and turns[-1].completion_tokens < MAX_TOKENS
    assert saved_turns(server, queued["r"].json()["conversation_id"])[1]  # a latency row too


def _wait_for(client: httpx.Client, active: int, waiting: int) -> bool:
    deadline = time.monotonic() + 30
    health: dict = {}
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        if (health["active"], health["waiting"]) == (active, waiting):
            return True
        time.sleep(0.02)
    pytest.fail(f"the server never had {active} running and {waiting} waiting: {health}")


def test_a_conversation_answers_one_message_at_a_time(server):
    """A second message while the first is being answered gets 409, not an interleaved reply."""
    with server.client() as client:
        first = client.post("/v1/chat/completions", json=chat("Hi!", max_tokens=2))
        token = first.json()["conversation_id"]
        long_reply = chat("Count from 1 to 200.", max_tokens=MAX_TOKENS, conversation_id=token)
        with client.stream("POST", "/v1/chat/completions", json={**long_reply, "stream": True}):
            _wait_for(client, active=1, waiting=0)
            again = client.post("/v1/chat/completions", json=chat("Hello?", conversation_id=token))
            assert _wait_for(client, active=1, waiting=0)  # the first is still being answered
    assert again.status_code == 409 and "still answering" in again.json()["error"]["message"]
    users = [m.content for m in saved_turns(server, token)[0] if m.role == "user"]
    assert users == ["Hi!", "Count from 1 to 200."]
