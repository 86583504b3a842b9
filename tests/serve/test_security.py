"""The security rules of `chatbot serve`, on a tiny model (fast): the API key, CORS only for
the named site, the page's own headers, and the bind rule and other bad flags as one-line
errors before anything loads."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chatbot.tiny_gguf import build_tiny_chat_gguf
from tests.serve.conftest import chat, isolated_env, running_server

KEY = "k3y-for-tests-only"
SHOP = "https://shop.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-key")
    model = build_tiny_chat_gguf(folder / "tiny.gguf")
    args = ("--model", str(model), "--ctx", "512", "--threads", "1", "--cors-origin", SHOP)
    with running_server(folder, *args, env={"CHATBOT_API_KEY": KEY}) as s:
        yield s


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ],
)
def test_api_needs_the_key_before_anything_else(server, headers):
    with server.client(headers=headers) as client:
        for response in (
            client.post("/v1/chat/completions", content=b"{not json"),
            client.post("/v1/chat/completions", json=chat("hi")),
            client.get("/v1/models"),
            client.get("/v1/conversations/whatever"),
        ):
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "API key" in response.json()["error"]["message"]


def test_with_the_key_the_api_answers(server):
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        assert client.get("/v1/models").status_code == 200
        reply = client.post("/v1/chat/completions", json=chat("hi", max_tokens=4))
        assert reply.status_code == 200, reply.text
        token = reply.json()["conversation_id"]
        assert client.get(f"/v1/conversations/{token}").status_code == 200
        assert client.get("/v1/conversations/1").status_code == 404


def test_page_and_health_need_no_key_and_load_nothing_from_elsewhere(server):
    with server.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/app.css").status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_cors_only_for_the_named_site(server):
    preflight = {"Access-Control-Request-Method": "POST"}
    with server.client() as client:
        allowed = client.options("/v1/chat/completions", headers={"Origin": SHOP, **preflight})
        assert allowed.headers["access-control-allow-origin"] == SHOP
        other = client.options(
            "/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        refused = client.get("/v1/models", headers={"Origin": SHOP})
        assert refused.status_code == 401  # a browser on the shop's site can read the 401 too
        assert refused.headers["access-control-allow-origin"] == SHOP


def serve(folder: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CHATBOT_API_KEY"}
    environment.update(isolated_env(folder))
    return subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "serve", "--model", "missing.gguf", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (("--host", "0.0.0.0"), "needs a key"),
        (("--host", "192.0.2.7"), "--api-key"),
        (("--host", "::"), "needs a key"),
        (("--parallel", "0"), "--parallel must be at least 1"),
        (("--queue", "-1"), "--queue must be 0 or more"),
        (("--max-tokens", "0"), "--max-tokens must be at least 1"),
        (("--cors-origin", "*"), "must name one site"),
        (("--port", "70000"), "--port must be between"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, args, says):
    done = serve(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and says in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_busy_port_is_one_error_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = serve(tmp_path, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr
    assert "missing.gguf" not in done.stderr  # refused before the model was looked at


def test_help_names_the_security_flags(tmp_path):
    done = serve(tmp_path, "--help")
    assert done.returncode == 0
    for flag in ("--host", "--api-key", "--parallel", "--queue", "--cors-origin", "--max-tokens"):
        assert flag in done.stdout
