"""The bounded queue: one reply running and one waiting fill a `--parallel 1 --queue 1` server;
the next customer gets 503 with Retry-After. A customer who leaves mid-reply stops it, and the
reply so far is saved, marked stopped, with its latency row."""

import threading
import time

import httpx
import pytest

from tests.serve.conftest import chat, running_server, saved_turns

pytestmark = pytest.mark.slow
MAX_TOKENS = 200  # a reply that runs for seconds, while the queue is filled


@pytest.fixture(scope="module")
def server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-queue")
    args = ("--model", str(real_model), "--parallel", "1", "--queue", "1")
    with running_server(folder, *args, "--max-tokens", str(MAX_TOKENS)) as s:
        yield s


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
