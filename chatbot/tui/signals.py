"""SIGTERM, SIGHUP (the terminal window closed) and SIGINT close the app as Ctrl+Q does.

Closing stops a running reply and waits for the session to save it (marked stopped, with its
latency row: `ChatApp.on_unmount`), then `chatbot` exits with 128 + the signal's number.
Without this, the default action of SIGTERM and SIGHUP would end the process mid-reply and
lose the reply. After SIGHUP the terminal is gone: what the app still draws goes to /dev/null.
"""

import asyncio
import contextlib
import os
import signal

from textual.app import App

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def close_on_signals(app: App) -> None:
    """From now on each of SIGNALS makes `app` exit (its return code 128 + the number)."""
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]

    def close(signum: int) -> None:
        if signum == signal.SIGHUP:
            for fd in terminal:  # a hung-up terminal fails every write
                _to_devnull(fd)
        app.exit(return_code=128 + signum)

    loop = asyncio.get_running_loop()
    for signum in SIGNALS:
        # Only the main thread may handle signals: elsewhere (a test's thread) they stay as is.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signum, close, signum)


def default_signals() -> None:
    """Give the signals back their usual action (once the reply is saved)."""
    loop = asyncio.get_running_loop()
    for signum in SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signum)


def _to_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
