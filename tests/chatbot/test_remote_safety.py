"""The remote engine in front of customers: proxies, keys, URL passwords, malformed replies.

Every test runs the real `chatbot` command against real HTTP servers on 127.0.0.1 (see
tests/chatbot/http_stub.py) and reads the real SQLite database afterwards: a customer's message
goes only where the user said, a secret is sent only in its header and appears in no output and
no file, and whatever a server answers is one `error:` line (exit 2) with nothing lost.
"""

import base64
from pathlib import Path

import pytest

from chatbot.engines.remote import RemoteEngine
from chatbot.engines.urls import redact
from chatbot.store.store import Store
from chatbot.tui.widgets.status_line import fit, model_parts
from tests.chatbot.http_stub import Reply, chatbot, delta, free_port, sse, stub_server

QUESTION = "Where is my refund?"
ANSWER = "Your refund is on its way."
COMPLETIONS = "/v1/chat/completions"
USAGE = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}}
FULL = sse(delta("Your refund"), delta(" is on its way.", "stop"), USAGE)
WORKING = {COMPLETIONS: Reply(200, "text/event-stream", FULL)}
BAD_GATEWAY = Reply(502, "text/plain", b"proxy says no")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` (databases, their WAL, the log) that holds `secret`."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def turns_and_messages(db: Path) -> tuple[list, list]:
    store = Store(db)
    try:
        (conversation,) = store.list_conversations()
        return store.turns(), store.messages(conversation.id)
    finally:
        store.close()


# --- proxies ----------------------------------------------------------------------------------


def test_the_environment_proxy_is_ignored(tmp_path, monkeypatch):
    """HTTP_PROXY and friends pointing at a proxy that answers 502 change nothing."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with stub_server({"*": BAD_GATEWAY}) as (proxy, via_proxy), stub_server(WORKING) as (url, seen):
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, proxy)
            monkeypatch.setenv(name.lower(), proxy)
        done = chatbot("ask", QUESTION, "--server", url, "--db", str(tmp_path / "chat.db"))
    assert (done.returncode, done.stdout, done.stderr) == (0, ANSWER + "\n", "")
    assert via_proxy == []  # the customer's message never went to the proxy
    assert [r.path for r in seen if r.method == "POST"][-1] == COMPLETIONS


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_proxy_is_used_when_the_user_asks(tmp_path, how):
    """--server-proxy (or server_proxy in the config file) sends the requests to the proxy."""
    with stub_server(WORKING) as (proxy, via_proxy), stub_server({}) as (url, direct):
        args = ["ask", QUESTION, "--server", url, "--db", str(tmp_path / "chat.db")]
        if how == "flag":
            args += ["--server-proxy", proxy]
        else:
            (tmp_path / "config.toml").write_text(f'server_proxy = "{proxy}"\n')  # CHATBOT_CONFIG
        done = chatbot(*args)
    assert (done.returncode, done.stdout) == (0, ANSWER + "\n"), done.stderr
    assert direct == []
    assert f"{url}{COMPLETIONS}" in [r.target for r in via_proxy]  # a proxy request: whole URL


def test_a_proxy_that_is_down_is_named_without_its_password(tmp_path):
    proxy = f"http://puser:psecret@127.0.0.1:{free_port()}"
    with stub_server(WORKING) as (url, direct):
        args = ["--server", url, "--server-proxy", proxy, "--db", str(tmp_path / "chat.db")]
        done = chatbot("ask", QUESTION, *args)
    assert done.returncode == 2 and direct == []
    shown = proxy.replace("puser:psecret", "***")
    assert done.stderr == (
        f"error: cannot reach {url} through the proxy {shown}: connection refused; "
        "is the server running?\n"
    )
    assert files_holding(tmp_path, "psecret") == []


# --- API keys ---------------------------------------------------------------------------------


def test_the_api_key_is_sent_as_a_bearer_token_and_never_kept(tmp_path, monkeypatch):
    """From CHATBOT_SERVER_API_KEY, or --server-api-key over it; in no output, database, export
    or log. CHATBOT_API_KEY, the key `chatbot serve` asks of its clients, is never forwarded."""
    env_key, flag_key = "sk-env-0123456789abcdef", "sk-flag-fedcba9876543210"
    monkeypatch.setenv("CHATBOT_SERVER_API_KEY", env_key)
    monkeypatch.setenv("CHATBOT_API_KEY", "serve-clients-key")
    db = str(tmp_path / "chat.db")
    with stub_server(WORKING) as (url, seen):
        first = chatbot("ask", QUESTION, "--server", url, "--db", db)
        n_first = len(seen)
        second = chatbot(
            "ask", "And my parcel?", "--server", url, "--db", db, "--server-api-key", flag_key
        )
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    sent = [r.headers.get("Authorization") for r in seen]
    # Every request (/v1/models, /tokenize, the completion) carries the key, the flag's first.
    assert set(sent[:n_first]) == {f"Bearer {env_key}"}
    assert set(sent[n_first:]) == {f"Bearer {flag_key}"}
    assert COMPLETIONS in [r.path for r in seen[n_first:]]
    shown = [first, second]
    shown += [chatbot(command, "--db", db) for command in ("stats", "history")]
    shown += [chatbot("export", "1", "--db", db, "--format", "json")]
    assert all(done.returncode == 0 for done in shown)
    for key in (env_key, flag_key):
        assert not any(key in done.stdout + done.stderr for done in shown)
        assert files_holding(tmp_path, key) == []


@pytest.mark.parametrize("key", [None, "sk-wrong-key-000"])
def test_a_server_that_refuses_the_key_says_what_to_do(tmp_path, key):
    body = b'{"error": {"message": "Invalid API Key"}}'
    refused = {COMPLETIONS: Reply(401, "application/json", body)}
    with stub_server(refused) as (url, _):
        args = ["ask", QUESTION, "--server", url, "--db", str(tmp_path / "chat.db")]
        done = chatbot(*args, *(["--server-api-key", key] if key else []))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {url} answered HTTP 401: Invalid API Key; ")
    hint = "check the API key" if key else "set CHATBOT_SERVER_API_KEY or pass --server-api-key"
    assert hint in done.stderr and (key is None or key not in done.stderr)


def test_a_key_that_cannot_be_sent_is_a_clear_error_that_does_not_show_it(tmp_path):
    with stub_server(WORKING) as (url, seen):
        args = ["--server", url, "--server-api-key", "sk-abc\u00e9 secret-part"]
        done = chatbot("ask", QUESTION, *args)
    assert done.returncode == 2 and seen == []
    assert done.stderr.startswith("error: the API key (--server-api-key or CHATBOT_SERVER_API_KEY)")
    assert "secret-part" not in done.stderr and done.stderr.count("\n") == 1


def test_the_api_key_is_not_a_config_key(tmp_path):
    (tmp_path / "config.toml").write_text('server_api_key = "sk-in-a-file"\n')  # CHATBOT_CONFIG
    done = chatbot("history")
    assert done.returncode == 2 and "unknown key 'server_api_key'" in done.stderr
    assert "sk-in-a-file" not in done.stderr


# --- credentials in the server URL ------------------------------------------------------------


def test_url_credentials_are_sent_as_basic_auth_and_shown_nowhere(tmp_path):
    db = str(tmp_path / "chat.db")
    with stub_server(WORKING) as (url, seen):
        secret_url = url.replace("//", "//alice:s3cr3t-pw@")
        done = chatbot("ask", QUESTION, "--server", secret_url, "--db", db)
        engine = RemoteEngine(secret_url)
        status = fit(model_parts(engine.info), 400)  # what the app's status line shows
        engine.close()
    assert (done.returncode, done.stdout) == (0, ANSWER + "\n"), done.stderr
    basic = "Basic " + base64.b64encode(b"alice:s3cr3t-pw").decode()
    assert {r.headers.get("Authorization") for r in seen} == {basic}
    assert url.replace("//", "//***@") in status and "s3cr3t" not in status
    stats = chatbot("stats", "--db", db)
    assert stats.returncode == 0 and "s3cr3t" not in stats.stdout
    down = chatbot("ask", QUESTION, "--server", secret_url, "--db", db)  # the server is gone now
    assert down.returncode == 2
    assert down.stderr.startswith(f"error: cannot reach {url.replace('//', '//***@')}: ")
    for secret in ("s3cr3t-pw", "alice"):
        assert secret not in done.stderr + down.stderr
        assert files_holding(tmp_path, secret) == []


def test_redact_hides_every_user_info():
    text = "http://u:p@ss@host:1/x?y=@z and https://token@other.example/v1 and http://plain:2"
    assert redact(text) == (
        "http://***@host:1/x?y=@z and https://***@other.example/v1 and http://plain:2"
    )


# --- malformed replies ------------------------------------------------------------------------

FIRST = sse(delta("Your refund"), done=False)
NUMBER_AS_TEXT = sse({"choices": [{"delta": {"content": 7}}]})
MALFORMED = {
    "models-data-5": (
        {"/v1/models": Reply(body=b'{"data": 5}'), **WORKING},
        "/v1/models answered something that is not a model list",
        "",
    ),
    "usage-not-a-count": (
        {COMPLETIONS: Reply(200, "text/event-stream", FULL.replace(b": 2}", b': "abc"}'))},
        "sent a malformed reply: usage.completion_tokens is 'abc'",
        ANSWER,
    ),
    "non-json-event": (
        {COMPLETIONS: Reply(200, "text/event-stream", FIRST + b"data: <html>oops</html>\n\n")},
        "sent a malformed event stream: '<html>oops</html>'",
        "Your refund",
    ),
    "html-200": (
        {COMPLETIONS: Reply(200, "text/html", b"<html><body>It works!</body></html>")},
        "did not answer with an OpenAI-compatible event stream",
        "",
    ),
    "dropped-mid-stream": (
        {COMPLETIONS: Reply(200, "text/event-stream", FULL, cut_after=len(FIRST))},
        "closed the connection during the chat completion",
        "Your refund",
    ),
    "choices-not-a-list": (
        {COMPLETIONS: Reply(200, "text/event-stream", sse({"choices": 5}))},
        "sent a malformed reply: choices is 5",
        "",
    ),
    "content-not-text": (
        {COMPLETIONS: Reply(200, "text/event-stream", FIRST + NUMBER_AS_TEXT)},
        "sent a malformed reply: choices[].delta.content is 7",
        "Your refund",
    ),
}


@pytest.mark.parametrize(("routes", "message", "partial"), MALFORMED.values(), ids=MALFORMED)
def test_a_malformed_reply_is_one_error_and_nothing_is_lost(tmp_path, routes, message, partial):
    """One error line, exit 2; the message, the partial reply (stopped) and a latency row."""
    db = tmp_path / "chat.db"
    with stub_server(routes) as (url, _):
        done = chatbot("ask", QUESTION, "--server", url, "--db", str(db))
    assert done.returncode == 2 and done.stdout == partial
    assert done.stderr.startswith(f"error: {url}") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    turns, messages = turns_and_messages(db)
    saved = [(m.role, m.content, m.stopped) for m in messages]
    replies = [("assistant", partial, True)] if partial else []
    assert saved == [("user", QUESTION, False), *replies]
    (turn,) = turns
    assert turn.stop_reason == "error" and turn.message_id == (messages[-1].id if partial else None)
    assert turn.completion_tokens == {ANSWER: 2, "Your refund": 1, "": 0}[partial]  # chunks
    assert turn.total_ms > 0 and (turn.ttft_ms > 0) == bool(partial)
