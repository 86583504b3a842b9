"""SIGTERM, SIGINT and SIGHUP (the terminal window closed) end the app without losing a reply.

SIGTERM and SIGINT close the app as Ctrl+Q does: a running reply stops and the session saves it
(marked stopped, with its latency row: `ChatApp.on_unmount`), then `chatbot` exits with 128 +
the signal's number. SIGHUP cannot wait for that: the terminal is gone, so Textual's output
thread dies on its next write and the UI thread then blocks on a full output queue, never to run
the event loop again. Its handler therefore runs at once, in whatever the UI thread is doing:
it stops the reply, waits for it to be saved, frees the model and exits 129, without drawing.
"""

import asyncio
import contextlib
import os
import signal
from types import FrameType

from textual.app import App

from chatbot.cli.signals import to_devnull

QUIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAVE_WAIT_S = 30.0  # how long a reply may take to stop (one token, or a prompt evaluation)
_previous_hangup: list[object] = []


def close_on_signals(app: App) -> None:
    """From now on SIGINT and SIGTERM close `app` (its return code 128 + the number) and SIGHUP
    saves the reply and ends the process (exit 129). `app` is the ChatApp (its `panel` and
    `engine`; not imported: it imports this). Only the main thread may handle signals: elsewhere
    (a test's thread) they stay as they are."""
    loop = asyncio.get_running_loop()
    for signum in QUIT_SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signum, lambda n=signum: app.exit(return_code=128 + n))
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]

    def hang_up(signum: int, frame: FrameType | None) -> None:
        for fd in terminal:  # whatever still writes to the terminal must not fail or block
            to_devnull(fd)
        if app.panel.stop(wait_s=SAVE_WAIT_S) and app.engine is not None:
            app.engine.close()  # a saved KV state reaches the disk
        os._exit(128 + signum)  # committed to SQLite; nothing left to draw

    with contextlib.suppress(ValueError):
        _previous_hangup[:] = [signal.signal(signal.SIGHUP, hang_up)]


def default_signals() -> None:
    """Give the signals back their usual action (once the reply is saved)."""
    loop = asyncio.get_running_loop()
    for signum in QUIT_SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signum)
    if _previous_hangup:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGHUP, _previous_hangup.pop())
