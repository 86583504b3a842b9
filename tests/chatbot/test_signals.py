"""Issue 12, item 7: a reply cut short by a signal is saved, whatever the signal.

The real `chatbot ask` and the real app run as subprocesses (the app in a pseudo-terminal,
whose closing is a closed terminal window: SIGHUP); each test sends a real signal mid-reply
and then reads the real SQLite store: the message, the partial reply marked stopped, and its
latency row. SIGKILL cannot be handled: what it leaves is what SQLite had committed.
"""

import contextlib
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatbot.engines.base import GenerationOptions
from chatbot.engines.llama import LlamaEngine
from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.widgets.message_view import MessageBubble
from tests.chatbot.pilot import ready, wait_for

STORY = "Write a long story about a girl who builds a boat."
CHATBOT = [sys.executable, "-m", "chatbot.cli"]


# With this seed the tiny model's random weights write all 3,000 tokens (about 4 s); most
# seeds sample its end-of-text token within a few hundred, ending the reply before a signal.
TINY_SEED = 17


def ask_args(model: Path, db: Path, max_tokens: int, *extra: str, seed: int = TINY_SEED) -> list:
    """`chatbot ask` with a long sampled reply to STORY."""
    return [*CHATBOT, "ask", STORY, "--model", str(model), "--db", str(db), "--ctx", "4096",
            "--threads", "1", "--max-tokens", str(max_tokens), "--temperature", "0.8",
            "--seed", str(seed), *extra]  # fmt: skip


def start_ask(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_bytes(process: subprocess.Popen, count: int) -> bytes:
    """The reply's first bytes once they have streamed. Unbuffered: `communicate` reads the
    pipe itself, and would never see what a buffered read took beyond `count`."""
    out = b""
    while len(out) < count:
        piece = os.read(process.stdout.fileno(), count - len(out))
        assert piece, f"the reply ended after {out!r}: {process.stderr.read().decode()}"
        out += piece
    return out


def the_turn(db: Path) -> tuple[list, list]:
    """The only conversation's messages and latency rows, read by a fresh Store."""
    store = Store(db)
    try:
        [conversation] = store.list_conversations()
        return store.messages(conversation.id), store.turns(conversation.id)
    finally:
        store.close()


def assert_saved_as_stopped(db: Path, max_tokens: int) -> str:
    """The message, the partial reply (stopped) and its latency row; the reply's text."""
    messages, turns = the_turn(db)
    assert [(m.role, m.content) for m in messages][0] == ("user", STORY)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].stopped
    [turn] = turns
    assert turn.stop_reason == "cancelled" and turn.message_id == messages[1].id
    assert 0 < turn.completion_tokens < max_tokens
    return messages[1].content


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_ask_stopped_by_a_signal_saves_the_partial_reply(tiny_gguf, db_path, signum):
    process = start_ask(ask_args(tiny_gguf, db_path, 3000))
    first = first_bytes(process, 40)  # the reply is streaming
    process.send_signal(signum)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err.decode()
    reply = assert_saved_as_stopped(db_path, 3000)
    assert (first + rest).decode() == reply + "\n"  # what the user saw is what was saved
    name = signal.Signals(signum).name
    assert err.decode().strip() == f"note: {name} stopped the reply; what came of it is saved, " \
        "marked as stopped"  # fmt: skip


def test_ask_whose_reader_goes_away_stops_and_saves(tiny_gguf, db_path):
    process = start_ask(ask_args(tiny_gguf, db_path, 3000))
    first_bytes(process, 40)
    process.stdout.close()  # `chatbot ask ... | head -c 40`
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGPIPE and b"Traceback" not in err, err.decode()
    assert_saved_as_stopped(db_path, 3000)


@contextlib.contextmanager
def terminal(args: list[str]) -> Iterator[tuple[int, int]]:
    """`args` run in a new pseudo-terminal, as its controlling process: (pid, master fd).
    On the way out the terminal is closed and the program, if still running, killed."""
    pid, master = pty.fork()
    if pid == 0:  # the child: become the program
        try:
            os.execv(args[0], args)
        finally:
            os._exit(127)
    try:
        yield pid, master
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def read_until(master: int, condition: Callable[[bytes], bool], timeout: float) -> bytes:
    """Read the terminal (a full one would block the program) until `condition(output)`."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while not condition(bytes(out)):
        assert time.monotonic() < deadline, f"timed out; the screen ended: {bytes(out[-300:])}"
        if select.select([master], [], [], 0.05)[0]:
            try:
                out += os.read(master, 65536)
            except OSError:  # the program closed the terminal
                break
    return bytes(out)


def drain(master: int | None, seconds: float) -> None:
    """Read and drop the terminal's output for `seconds` (a full terminal blocks a program)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if master is None:
            time.sleep(0.05)
        elif select.select([master], [], [], 0.05)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                master = None


def exit_code(pid: int, master: int | None = None, timeout: float = 60) -> int:
    """The program's exit code, or a failure naming what it was doing when it did not exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        drain(master, 0.05)
    waiting = Path(f"/proc/{pid}/wchan").read_text()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the program did not exit within {timeout} s (waiting in {waiting})")


def test_ask_in_a_terminal_that_closes_saves_the_partial_reply(tiny_gguf, db_path):
    with terminal(ask_args(tiny_gguf, db_path, 3000)) as (pid, master):
        read_until(master, lambda out: len(out) > 40, timeout=60)
        os.close(master)  # the window closes: the kernel hangs up the terminal (SIGHUP)
        assert exit_code(pid) == 128 + signal.SIGHUP
    assert_saved_as_stopped(db_path, 3000)


def test_sigkill_keeps_what_sqlite_committed(tiny_gguf, db_path):
    process = start_ask(ask_args(tiny_gguf, db_path, 3000))
    first_bytes(process, 40)
    process.kill()  # no handler runs: the reply so far was never written
    process.communicate(timeout=60)
    messages, turns = the_turn(db_path)
    assert [(m.role, m.content) for m in messages] == [("user", STORY)] and turns == []
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conversation = messages[0].conversation_id
    again = subprocess.run(
        [*ask_args(tiny_gguf, db_path, 5, "--json"), "--conversation", str(conversation)],
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads(again.stdout)["conversation_id"] == conversation
    assert [m.role for m in the_turn(db_path)[0]] == ["user", "user", "assistant"]


@pytest.mark.slow
def test_ask_on_the_real_model_stopped_by_sigterm(real_gguf, db_path):
    process = start_ask(ask_args(real_gguf, db_path, 400, seed=7))
    first = first_bytes(process, 60)
    process.send_signal(signal.SIGTERM)
    rest, err = process.communicate(timeout=120)
    assert process.returncode == 143, err.decode()
    reply = assert_saved_as_stopped(db_path, 400)
    assert (first + rest).decode() == reply + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["close the terminal", "SIGTERM"])
def test_the_app_closed_mid_reply_saves_the_partial_reply(real_gguf, db_path, how):
    args = [*CHATBOT, "--model", str(real_gguf), "--db", str(db_path), "--ctx", "1024",
            "--threads", "1"]  # fmt: skip
    with terminal(args) as (pid, master):
        read_until(master, lambda out: b"Ready" in out, timeout=120)
        os.write(master, STORY.encode())
        deadline = time.monotonic() + 60
        while not _saved_messages(db_path):  # Enter until the message is saved
            assert time.monotonic() < deadline, "the message was never sent"
            os.write(master, b"\r")
            drain(master, 0.3)
        drain(master, 2.0)  # the reply streams meanwhile
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
            code = exit_code(pid, master)
        else:
            os.close(master)  # the window closes: the kernel hangs up the terminal (SIGHUP)
            code = exit_code(pid)
    assert code == (143 if how == "SIGTERM" else 129)
    messages, turns = the_turn(db_path)
    assert [(m.role, m.content) for m in messages][0] == ("user", STORY)
    assert [m.role for m in messages] == ["user", "assistant"] and messages[1].stopped
    assert [t.stop_reason for t in turns] == ["cancelled"]


def _saved_messages(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


@pytest.mark.slow
async def test_the_app_under_pilot_exits_143_on_sigterm_with_the_reply_saved(real_gguf, db_path):
    store = Store(db_path)
    app = ChatApp(
        lambda: LlamaEngine(real_gguf, n_ctx=1024, n_threads=1),
        store,
        options=GenerationOptions(max_tokens=400, temperature=0.7, seed=7),
    )
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.press(*STORY, "enter")
            await wait_for(pilot, lambda: bool(app.query(MessageBubble).last().text), "words")
            handler = signal.getsignal(signal.SIGTERM)
            assert handler not in (signal.SIG_DFL, None), "SIGTERM would end the test run"
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_for(pilot, lambda: app.return_code is not None, "the app to close")
        assert app.return_code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back on closing
        conversation = store.list_conversations()[0].id
        reply = store.messages(conversation)[-1]
        assert reply.role == "assistant" and reply.stopped and reply.content
        assert [t.stop_reason for t in store.turns(conversation)] == ["cancelled"]
    finally:
        store.close()
