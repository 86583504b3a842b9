"""The parts of `chatbot serve` that need no server: the bind rule, the queue, customer tokens
and hand-off resolution in the store, and the web page's own files."""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.errors import ChatbotError, StoreError
from chatbot.serve.limiter import Limiter, QueueFull
from chatbot.serve.settings import ServeSettings, is_loopback
from chatbot.store.store import Store
from tests.serve.conftest import isolated_env

STATIC = Path(__file__).resolve().parents[2] / "chatbot/serve/static"


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_a_key_is_required_off_loopback_only():
    assert ServeSettings().check().host == "127.0.0.1"
    with pytest.raises(ChatbotError, match="needs a key"):
        ServeSettings(host="0.0.0.0").check()
    assert ServeSettings(host="0.0.0.0", api_key="secret").check().api_key == "secret"


def test_the_key_comes_from_the_flag_else_the_environment(monkeypatch):
    from chatbot.cli.options import build_parser

    parse = build_parser().parse_args
    monkeypatch.setenv("CHATBOT_API_KEY", "from-env")
    assert ServeSettings.from_args(parse(["serve"])).api_key == "from-env"
    assert ServeSettings.from_args(parse(["serve", "--api-key", "flag"])).api_key == "flag"
    monkeypatch.setenv("CHATBOT_API_KEY", "")
    assert ServeSettings.from_args(parse(["serve", "--host", "::"])).api_key is None


async def test_queue_admits_parallel_plus_waiting_then_refuses():
    limiter = Limiter(parallel=1, queue=1)
    first, second = limiter.admit(), limiter.admit()
    await first.wait()
    assert (limiter.active, limiter.waiting) == (1, 1)
    with pytest.raises(QueueFull) as refused:
        limiter.admit()
    assert refused.value.retry_after >= 1
    waiting = asyncio.create_task(second.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # no slot yet
    first.release()
    first.release()  # a second release changes nothing
    await asyncio.wait_for(waiting, 1)
    assert (limiter.active, limiter.waiting) == (1, 0)
    second.release()
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_a_request_that_gives_up_waiting_frees_its_place():
    limiter = Limiter(parallel=1, queue=1)
    running, waiting = limiter.admit(), limiter.admit()
    await running.wait()
    task = asyncio.create_task(waiting.wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waiting.release()
    assert (limiter.active, limiter.waiting) == (1, 0)
    limiter.admit()  # the place is free again


async def test_retry_after_follows_recent_turn_times():
    limiter = Limiter(parallel=2, queue=0)
    limiter._durations.extend([4.0, 6.0])
    assert limiter.retry_after() == 3  # 5 s a turn, one place in two slots


def test_customer_tokens_open_only_their_conversation_and_are_stored_hashed(tmp_path):
    store = Store(tmp_path / "chat.db")
    mine, other = store.new_conversation("a"), store.new_conversation("b")
    store.add_customer_token(mine.id, "my-secret-token")
    assert store.conversation_for_token("my-secret-token") == mine.id
    assert store.conversation_for_token("my-secret-token ") is None
    assert store.conversation_for_token(str(other.id)) is None
    raw = (tmp_path / "chat.db").read_bytes() + (tmp_path / "chat.db-wal").read_bytes()
    assert b"my-secret-token" not in raw
    store.delete_conversation(mine.id)
    assert store.conversation_for_token("my-secret-token") is None
    store.close()


def test_handoffs_are_resolved_once_and_say_which_came_from_a_customer(tmp_path):
    store = Store(tmp_path / "chat.db")
    served, local = store.new_conversation("web"), store.new_conversation("app")
    store.add_customer_token(served.id, "t")
    for conversation in (served, local):
        store.add_message(conversation.id, "user", f"question {conversation.id}")
        store.add_message(conversation.id, "assistant", "a person will help", handoff=True)
    listed = store.handoffs()
    assert [(h.conversation_id, h.served) for h in listed] == [(local.id, False), (served.id, True)]
    done = store.resolve_handoff(listed[1].message_id)
    assert done.resolved_at is not None and done.question == f"question {served.id}"
    assert store.resolve_handoff(done.message_id).resolved_at == done.resolved_at
    assert [h.conversation_id for h in store.handoffs(unresolved=True)] == [local.id]
    with pytest.raises(StoreError, match="no hand-off"):
        store.resolve_handoff(1)  # a customer's message, not a hand-off
    store.close()


def test_the_page_loads_only_its_own_files_and_writes_text_never_html():
    page = (STATIC / "index.html").read_text()
    script = (STATIC / "app.js").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/app.js" defer>']
    for text in (page, script, (STATIC / "app.css").read_text()):
        assert "http://" not in text and "https://" not in text  # no CDN, works offline
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script
    assert "textContent" in script and 'name="viewport"' in page


def test_handoffs_command_lists_customers_and_resolves(tmp_path):
    db = tmp_path / "chat.db"
    store = Store(db)
    conversation = store.new_conversation("web")
    store.add_customer_token(conversation.id, "t")
    store.add_message(conversation.id, "user", "Where is my parcel?")
    handoff = store.add_message(conversation.id, "assistant", "A person will help", handoff=True)
    store.close()

    def chatbot(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "chatbot.cli", "handoffs", "--db", str(db), *args]
        env = {**os.environ, **isolated_env(tmp_path)}
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    done = chatbot()
    assert done.returncode == 0, done.stderr
    listed = done.stdout
    assert f"{handoff.id}" in listed and "open" in listed
    assert f"customer conversation {conversation.id}: Where is my parcel?" in listed
    assert "is resolved" in chatbot("--resolve", str(handoff.id)).stdout
    assert "resolved" in chatbot().stdout and chatbot("--open").stdout.startswith("no hand-offs")
    missing = chatbot("--resolve", "999")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no hand-off 999")
