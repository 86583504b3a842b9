"""Ctrl-C, SIGTERM and SIGHUP for `chatbot ask`: a reply they cut short is saved, not lost.

During a reply the first of these signals only asks the reply to stop, as Esc does in the app:
the engine ends at the next token, and the session saves the partial reply (marked stopped)
and its latency row before the command exits with 128 + the signal's number (130, 143, 129).
A second signal interrupts at once (`Interrupted`, a KeyboardInterrupt; the partial reply is
still saved, without its latency row); outside a reply the signals do what they always do.
SIGHUP means the terminal is gone: what would have been written to it is thrown away.
"""

import os
import signal
from types import FrameType
from typing import TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal that ends the command at once; `exit_code` is the shell's 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopSignals:
    """Installed for one reply (a context manager): the first signal sets `received`, which
    `should_stop` reports to the engine; a second one interrupts at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.output_gone = False  # the reader of the reply went away (a closed pipe)
        self._previous: dict[int, object] = {}
        self._terminal_fds: list[int] = []

    def __enter__(self) -> "StopSignals":
        self._terminal_fds = [fd for fd in (1, 2) if os.isatty(fd)]
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def should_stop(self) -> bool:
        """For the engine: stop at the next token."""
        return self.received is not None or self.output_gone

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number, as a shell reports a process the signal ended (a reader
        that went away counts as SIGPIPE)."""
        if self.received is None and not self.output_gone:
            return None
        return 128 + (self.received or signal.SIGPIPE)

    def output_lost(self) -> None:
        """The reader of the reply is gone: stop, as SIGPIPE would have (Python ignores it).
        Not a signal: a SIGHUP that comes after the write failed is still the first."""
        self.output_gone = True

    def note(self) -> str | None:
        """What to tell the user about a reply that was stopped; None when it was not."""
        if self.received is not None:
            name = signal.Signals(self.received).name
            return f"{name} stopped the reply; what came of it is saved, marked as stopped"
        if self.output_gone:
            return "the output was closed; the reply so far is saved, marked as stopped"
        return None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            for fd in self._terminal_fds:  # the terminal hung up: writing to it would fail
                to_devnull(fd)
        if self.received is not None:
            raise Interrupted(signum)
        self.received = signum


def write(stream: TextIO, text: str) -> bool:
    """Write and flush `text`; False (and the stream silenced) when its reader is gone."""
    try:
        stream.write(text)
        stream.flush()
    except OSError:
        silence(stream)
        return False
    return True


def silence(stream: TextIO) -> None:
    """Send `stream` to /dev/null, so later writes and the flush at exit cannot fail."""
    try:
        to_devnull(stream.fileno())
        stream.flush()  # what the failed write left in the buffer goes to /dev/null now
    except (OSError, ValueError):
        pass


def to_devnull(fd: int) -> None:
    """Point `fd` at /dev/null: a closed terminal's writes then go nowhere instead of failing."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
