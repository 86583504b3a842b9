"""`chatbot` headless commands, run as real processes: output, exit codes, errors, concurrency."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from chatbot.store.store import Store


def chatbot(*args, timeout=120, env=None):
    return subprocess.run(
        [sys.executable, "-m", "chatbot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "chat.db"


def ask(tiny_gguf, db, text, *extra):
    return chatbot("ask", text, "--model", tiny_gguf, "--db", db, "--ctx", 512, "--threads", 1,
                   "--max-tokens", 5, "--temperature", 0, *extra)  # fmt: skip


@pytest.mark.parametrize("command", [[], ["ask"], ["history"], ["export"], ["stats"], ["handoffs"]])
def test_help_for_every_command(command):
    done = chatbot(*command, "--help")
    assert done.returncode == 0 and "usage: chatbot" in done.stdout


def test_ask_streams_then_history_export_stats(tiny_gguf, db):
    done = ask(tiny_gguf, db, "first question")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    [conversation] = Store(db).list_conversations()
    reply = Store(db).messages(conversation.id)[-1].content
    assert done.stdout == reply + "\n"

    as_json = ask(tiny_gguf, db, "follow up", "--conversation", conversation.id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["conversation_id"] == conversation.id
    for key in ("answer", "prompt_tokens", "cached_tokens", "completion_tokens", "ttft_ms",
                "decode_tps", "total_ms", "cpu_seconds", "stop_reason", "model",
                "quantization", "threads", "sources", "handoff"):  # fmt: skip
        assert key in result
    assert result["model"] == tiny_gguf.name and result["handoff"] is False

    history = chatbot("history", "--db", db)
    assert history.returncode == 0 and "first question" in history.stdout
    found = json.loads(chatbot("history", "--db", db, "--search", "follow", "--json").stdout)
    assert [c["id"] for c in found] == [conversation.id]
    assert "no conversations match" in chatbot("history", "--db", db, "--search", "zzz").stdout

    md = chatbot("export", conversation.id, "--db", db, "--format", "md")
    assert md.returncode == 0 and "## You\n\nfollow up" in md.stdout
    doc = json.loads(chatbot("export", conversation.id, "--db", db, "--format", "json").stdout)
    assert len(doc["messages"]) == 4

    stats = json.loads(chatbot("stats", "--db", db, "--json").stdout)
    assert stats[0]["model_file"] == tiny_gguf.name and stats[0]["turns"] == 2
    assert "time to first token" in chatbot("stats", "--db", db).stdout
    assert json.loads(chatbot("handoffs", "--db", db, "--json").stdout) == []


def test_ask_model_file_missing(tmp_path, db):
    assert_error(ask(tmp_path / "missing.gguf", db, "hi"), "not found")


def test_ask_random_bytes_named_gguf(tmp_path, db):
    junk = tmp_path / "random.gguf"
    junk.write_bytes(os.urandom(10_000))
    assert_error(ask(junk, db, "hi"), "not a GGUF model file")


def test_ask_directory_as_model(tmp_path, db):
    assert_error(ask(tmp_path, db, "hi"), "is a folder")


def test_ask_empty_message(tiny_gguf, db):
    assert_error(ask(tiny_gguf, db, "  \x07\x1b[2J "), "empty")
    assert Store(db).list_conversations() == []


def test_ask_control_characters_are_stripped(tiny_gguf, db):
    done = ask(tiny_gguf, db, "hi\x1b[31m there\x07\x01")
    assert done.returncode == 0, done.stderr
    [conversation] = Store(db).list_conversations()
    assert Store(db).messages(conversation.id)[0].content == "hi there"


def test_ask_100kb_paste_is_kept_and_refused_clearly(tiny_gguf, db):
    paste = "word " * 20_000
    done = chatbot("ask", paste, "--model", tiny_gguf, "--db", db, "--ctx", 256)
    assert_error(done, "too long", "--ctx")
    [conversation] = Store(db).list_conversations()
    assert Store(db).messages(conversation.id)[0].content == paste.strip()


def test_unknown_conversation_and_export(tiny_gguf, db):
    assert_error(ask(tiny_gguf, db, "hi", "--conversation", 99), "no conversation 99")
    assert_error(chatbot("export", 99, "--db", db), "no conversation 99")


def test_bad_numbers_are_one_line_errors(tiny_gguf, db):
    assert_error(ask(tiny_gguf, db, "hi", "--ctx", 0), "--ctx")


HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_database_locked_by_another_process(tiny_gguf, db):
    Store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        start = time.monotonic()
        done = ask(tiny_gguf, db, "are you there?")
        assert time.monotonic() - start >= 5  # waited for the lock before giving up
        assert_error(done, "locked by another process")
        assert done.stdout == ""
    finally:
        holder.kill()
        holder.wait()


def test_two_ask_processes_on_one_database_lose_nothing(tiny_gguf, db):
    Store(db).close()
    args = ["--model", tiny_gguf, "--db", db, "--ctx", 256, "--threads", 1, "--max-tokens", 20]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "chatbot.cli", "ask", f"question {n}", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = Store(db)
    conversations = store.list_conversations()
    assert sorted(c.title for c in conversations) == ["question 0", "question 1"]
    for c in conversations:
        assert [m.role for m in store.messages(c.id)] == ["user", "assistant"]
    assert len(store.turns()) == 2


NO_TORCH = textwrap.dedent(
    """
    import json, sys
    from chatbot.cli.commands import main
    rc = main(sys.argv[1:])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
    """
)


def test_ask_never_imports_torch_or_transformers(tiny_gguf, db):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH,
            "ask",
            "hi",
            "--model",
            str(tiny_gguf),
            "--db",
            str(db),
            "--ctx",
            "256",
            "--max-tokens",
            "3",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}


@pytest.mark.slow
def test_ask_on_the_real_model(real_gguf, db):
    done = chatbot("ask", "What is 2 + 2?", "--model", real_gguf, "--db", db, "--ctx", 1024,
                   "--max-tokens", 12, "--temperature", 0, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"].strip() and result["completion_tokens"] > 0
    assert result["quantization"] == "Q4_K_M"
