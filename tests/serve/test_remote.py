"""`chatbot serve --server URL` in front of llama-cpp-python's own OpenAI-compatible server (the
scale-out path), both on loopback: the same API, conversations and saved turns."""

import subprocess
import sys
import time

import httpx
import pytest

from tests.serve.conftest import chat, free_port, running_server, saved_turns, sse_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_server(real_model, tmp_path_factory):
    """`python -m llama_cpp.server` with the real model on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(real_model)]
    options = ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with log.open("w") as out:
        process = subprocess.Popen([*command, *options], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(engine_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-remote")
    with running_server(folder, "--server", engine_server, "--max-tokens", "32") as s:
        yield s


def test_replies_and_a_continued_conversation_through_the_remote_engine(server):
    with server.client() as client:
        first = client.post("/v1/chat/completions", json=chat("Name a colour."))
        assert first.status_code == 200, first.text
        token = first.json()["conversation_id"]
        assert first.json()["choices"][0]["message"]["content"].strip()
        request = chat("And another one?", conversation_id=token, stream=True)
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            assert response.status_code == 200
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    pieces = [
        e["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
        if isinstance(e, dict) and e["choices"]
    ]
    assert "".join(pieces).strip() and len([p for p in pieces if p]) >= 2
    messages, turns = saved_turns(server, token)
    assert [m.content for m in messages if m.role == "user"] == [
        "Name a colour.",
        "And another one?",
    ]
    assert messages[-1].content == "".join(pieces)
    assert len(turns) == 2 and all(t.quantization == "remote" for t in turns)
    assert turns[1].prompt_tokens > turns[0].prompt_tokens  # the history went to the server
