"""Issue 12, item 9: what the chatbot creates is its user's alone, and a wrong CHATBOT_CONFIG
is an error, not silence.

Databases (with their -wal and -shm files), the log and exports are 0600 and the folders made
for them 0700, even under a umask of 0 (the most open a user can set); checked on the files the
real `chatbot` command and the real app create.
"""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.errors import ChatbotError
from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.screens.export import ExportScreen
from tests.chatbot.pilot import notifications, seed_conversation, wait_for

FAQ = Path(__file__).resolve().parents[2] / "data" / "faq" / "store_faq.jsonl"


def chatbot(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    """`chatbot` started under umask 0, so only the chatbot's own modes keep files private."""
    return subprocess.Popen(
        [sys.executable, "-m", "chatbot.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: os.umask(0),
        **popen,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_default_database_its_folders_and_the_log_are_private(tiny_gguf, tmp_path):
    data = tmp_path / "new" / "nested" / "data"
    done = chatbot("ask", "hi", "--model", tiny_gguf, "--max-tokens", 2,
                   env={"CHATBOT_DATA_DIR": str(data)})  # fmt: skip
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    for folder in (tmp_path / "new", tmp_path / "new" / "nested", data):
        assert mode(folder) == 0o700, folder
    assert mode(data / "chat.db") == 0o600
    assert mode(data / "chatbot.log") == 0o600


def test_the_wal_and_shm_files_are_private_while_a_reply_is_written(tiny_gguf, tmp_path):
    db = tmp_path / "chat.db"
    process = chatbot("ask", "Write a long story about a girl who builds a boat.", "--model",
                      tiny_gguf, "--db", db, "--ctx", 4096, "--threads", 1, "--max-tokens", 3000,
                      "--temperature", 0.8, "--seed", 17)  # fmt: skip
    try:
        assert os.read(process.stdout.fileno(), 1), "no reply"  # streaming: SQLite is open
        modes = {
            name: mode(db.with_name(name)) for name in ("chat.db", "chat.db-wal", "chat.db-shm")
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert modes == {"chat.db": 0o600, "chat.db-wal": 0o600, "chat.db-shm": 0o600}


def test_nothing_the_faq_bot_writes_is_readable_by_others(tiny_gguf, tmp_path):
    """The conversation store, the log, the FAQ index, the KV states, the encoder it unpacks:
    every file and folder the command creates, in a fresh data and cache folder."""
    folders = {"CHATBOT_DATA_DIR": tmp_path / "data", "CHATBOT_CACHE_DIR": tmp_path / "cache"}
    done = chatbot("ask", "how do I return an item?", "--model", tiny_gguf, "--faq", FAQ,
                   "--max-tokens", 3, env={k: str(v) for k, v in folders.items()})  # fmt: skip
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err.decode()
    made = [p for folder in folders.values() for p in (folder, *folder.rglob("*"))]
    assert len(made) > 5 and any(p.suffix == ".db" for p in made)
    open_to_others = {str(p): oct(mode(p)) for p in made if mode(p) & 0o077}
    assert open_to_others == {}


async def test_an_export_from_the_app_is_private(db_path, tmp_path):
    seed_conversation(db_path, "Export me", [("Question?", "Answer.")])
    store = Store(db_path)

    def no_model():
        raise ChatbotError("no model in this test")  # exporting needs none

    app = ChatApp(no_model, store)
    old = os.umask(0)
    try:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await wait_for(pilot, lambda: app.panel.engine_error is not None, "the model error")
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, ExportScreen)
            target = tmp_path / "chat.md"
            app.screen.query_one("#path").value = str(target)
            await pilot.click("#ok")
            await wait_for(pilot, target.exists, "the export")
            assert any(str(target) in n for n in notifications(app))
    finally:
        os.umask(old)
        store.close()
    assert mode(target) == 0o600 and "Answer." in target.read_text()


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_chatbot_config_naming_no_file_is_an_error(tmp_path, kind):
    config = tmp_path / "nowhere.toml"
    if kind == "folder":
        config.mkdir()
    done = chatbot("history", env={"CHATBOT_CONFIG": str(config)})
    _, err = done.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, err.decode()
    expected = "does not exist" if kind == "missing" else "is a folder"
    assert lines[0].startswith(f"error: config file {config}") and expected in lines[0]


def test_an_empty_config_file_is_fine(tmp_path):
    config = tmp_path / "empty.toml"
    config.write_text("")
    done = chatbot("history", env={"CHATBOT_CONFIG": str(config)})
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0 and out == b"no conversations yet\n", err.decode()
