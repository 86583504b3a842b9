"""Issue 12, items 2 and 3: hostile bytes and numbers given to the real `chatbot` command.

Each test runs `chatbot` as a subprocess with the bytes a shell would pass (argv is bytes; a
byte that is not UTF-8 reaches Python as a surrogate escape) and checks the one `error:` line
and exit code 2, or what was saved in the real SQLite store.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatbot.store.store import Store

BAD = b"\xe9"  # Latin-1 "é": not UTF-8 on its own
FFFD = "\ufffd"
FAQ = Path(__file__).resolve().parents[2] / "data" / "faq" / "store_faq.jsonl"


def chatbot(*args: str | bytes | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args]
    return subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"chatbot.cli", *argv],
        capture_output=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def ask(model: Path, db: Path, text: bytes | str, *extra) -> subprocess.CompletedProcess:
    return chatbot("ask", text, "--model", model, "--db", db, "--ctx", 512, "--threads", 1,
                   "--max-tokens", 4, "--temperature", 0, *extra)  # fmt: skip


def assert_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, one `error:` line on stderr, no traceback, nothing on stdout; the line."""
    err = done.stderr.decode("utf-8", "replace")
    lines = err.strip().splitlines()
    assert done.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and done.stdout == b""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def saved(db: Path) -> list[tuple[str, str, bool]]:
    """Every message of the only conversation: (role, content, hand-off)."""
    store = Store(db)
    try:
        [conversation] = store.list_conversations()
        return [(m.role, m.content, m.handoff) for m in store.messages(conversation.id)]
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


# Item 2: bytes that are not UTF-8, and control characters


def test_bad_bytes_in_the_message_become_fffd_not_nothing(tiny_gguf, db):
    done = ask(tiny_gguf, db, b"caf" + BAD + b" hello")
    assert done.returncode == 0, done.stderr.decode()
    assert saved(db)[0][:2] == ("user", f"caf{FFFD} hello")


def test_bad_bytes_in_system_prompt_and_search_are_replaced(tiny_gguf, db):
    done = ask(tiny_gguf, db, "hello", "--system", b"be kind" + BAD + b"\x07\x1b[31m")
    assert done.returncode == 0, done.stderr.decode()
    store = Store(db)
    [conversation] = store.list_conversations()
    assert conversation.system_prompt == f"be kind{FFFD}"  # as a message is cleaned
    store.close()
    found = chatbot("history", "--db", db, "--search", b"hel" + BAD)
    assert found.returncode == 0 and found.stderr == b"", found.stderr.decode()
    assert b"hello" in found.stdout


def test_a_handoff_reply_with_bad_bytes_is_saved_with_the_question(tiny_gguf, db):
    question = b"what is the airspeed of an unladen swallow" + BAD
    done = ask(tiny_gguf, db, question, "--faq", FAQ, "--handoff-reply", b"Call Sam" + BAD)
    assert done.returncode == 0, done.stderr.decode()
    assert saved(db) == [
        ("user", f"what is the airspeed of an unladen swallow{FFFD}", False),
        ("assistant", f"Call Sam{FFFD}", True),
    ]


def test_a_handoff_reply_of_control_characters_only_is_refused(tiny_gguf, db):
    assert_error(ask(tiny_gguf, db, "hi", "--faq", FAQ, "--handoff-reply", "\x07\x1b[2J"), "empty")


@pytest.mark.parametrize("option", ["--db", "--model", "--faq"])
def test_paths_with_bad_bytes_are_one_error(tiny_gguf, tmp_path, db, option):
    odd = os.fsencode(tmp_path) + b"/caf" + BAD + b".file"
    args = {"--db": db, "--model": tiny_gguf, "--faq": FAQ, option: odd}
    done = chatbot("ask", "hi", *[part for pair in args.items() for part in pair])
    assert_error(done, option, "caf\\xe9.file", "not UTF-8")
    assert not db.exists() and not any(b"caf" in name for name in os.listdir(os.fsencode(tmp_path)))


@pytest.mark.parametrize("option", ["--server-api-key", "--server-proxy"])
def test_keys_and_urls_with_bad_bytes_are_one_error_that_never_shows_them(db, option):
    value = b"sk-secret" + BAD
    done = chatbot("ask", "hi", "--db", db, "--server", "http://127.0.0.1:9", option, value)
    line = assert_error(done, option, "not UTF-8")
    assert "secret" not in line


def test_config_values_follow_the_same_rule(tiny_gguf, tmp_path, db):
    config = tmp_path / "config.toml"  # CHATBOT_CONFIG (tests/conftest.py)
    config.write_text('system = "be brief\\u0007\\u001b[2J"\n')
    assert ask(tiny_gguf, db, "hi").returncode == 0
    assert Store(db).list_conversations()[0].system_prompt == "be brief"
    config.write_text('server = "http://127.0.0.1:9/\\u0007"\n')
    assert_error(chatbot("history", "--db", db), f"config file {config}: server", "control")


# Item 3: numbers with bounds


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--ctx", 63, "--ctx must be at least 64, got 63"),
        ("--max-tokens", 0, "--max-tokens must be at least 1, got 0"),
        ("--max-tokens", -5, "--max-tokens must be at least 1, got -5"),
        ("--threads", 0, "--threads must be at least 1, got 0"),
        ("--gpu-layers", -2, "--gpu-layers must be at least -1, got -2"),
        ("--temperature", "nan", "--temperature must be a finite number"),
    ],
)
def test_numbers_out_of_bounds_are_one_error(tiny_gguf, db, option, value, message):
    assert_error(ask(tiny_gguf, db, "hi", option, value), message)
    assert not db.exists() or Store(db).list_conversations() == []


def test_ctx_beyond_the_training_context_is_refused_at_once(tiny_gguf, db):
    start = time.monotonic()
    line = assert_error(ask(tiny_gguf, db, "hi", "--ctx", 99999999999))
    assert time.monotonic() - start < 30  # no attempt to allocate the context
    assert "4096 tokens tiny-chat.gguf was trained on" in line and "--ctx 64 to 4096" in line
    assert f"gguf-set-metadata {tiny_gguf} llama.context_length N" in line
    assert Store(db).list_conversations() == []


def test_the_way_beyond_the_training_context_that_the_error_gives_works(tiny_gguf, tmp_path, db):
    longer = tmp_path / "longer.gguf"
    shutil.copy(tiny_gguf, longer)
    assert ask(longer, db, "hi", "--ctx", 8192).returncode == 2
    tool = Path(sys.executable).parent / "gguf-set-metadata"
    subprocess.run([tool, longer, "llama.context_length", "8192", "--force"], check=True,
                   capture_output=True)  # fmt: skip
    done = ask(longer, db, "hi", "--ctx", 8192, "--json")
    assert done.returncode == 0, done.stderr.decode()


def test_the_context_bound_holds_in_the_config_file_and_for_the_app(tiny_gguf, tmp_path, db):
    config = tmp_path / "config.toml"
    config.write_text("ctx = 32\n")
    assert_error(chatbot("history", "--db", db), f"config file {config}: ctx must be at least 64")
    config.write_text("ctx = 1000000\n")
    plain = ("ask", "hi", "--model", tiny_gguf, "--db", db, "--max-tokens", 2)
    assert_error(chatbot(*plain), "more than the 4096 tokens")
    assert chatbot(*plain, "--ctx", 512).returncode == 0  # the flag wins over the file
    config.write_text("")
    # The app checks before it starts: an error line, not a screen (no terminal here).
    assert_error(chatbot("--model", tiny_gguf, "--db", db, "--ctx", 100000), "trained on")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ctx", 100000], "more than the 4096 tokens"),
        (["--max-tokens", 0], "--max-tokens must be at least 1"),
        (["--threads", 0], "--threads must be at least 1"),
        (["--gpu-layers", -3], "--gpu-layers must be at least -1"),
    ],
)
def test_serve_has_the_same_bounds(tiny_gguf, db, args, message):
    done = chatbot("serve", "--model", tiny_gguf, "--db", db, "--port", 0, *args)
    assert_error(done, message)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("threads = 0", "threads must be at least 1"),
        ("gpu_layers = -2", "gpu_layers must be at least -1"),
    ],
)
def test_config_file_numbers_have_the_same_bounds(tmp_path, db, line, message):
    config = tmp_path / "config.toml"
    config.write_text(line + "\n")
    assert_error(chatbot("history", "--db", db), f"config file {config}: {message}")
