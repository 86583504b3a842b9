"""llama.cpp's log, routed once for the whole process: to Python logging, never the terminal.

llama.cpp has a single process-wide log callback. `install()` sets ours (idempotent); it joins
the fragments llama.cpp sends into lines and gives each line to the logger "llama.cpp" and to
whoever listens for a while (`with listen(fn):`), such as the quantizer's progress bar or a
model load that wants the first error to explain a failure. The callback stays installed and
alive for the life of the process: a llama.cpp thread still running after Ctrl-C cannot reach
freed memory, and nothing falls back to llama-cpp-python's own callback, which prints.
"""

import contextlib
import ctypes
import io
import logging
import threading
from collections.abc import Callable, Iterator

import llama_cpp

log = logging.getLogger("llama.cpp")
log.addHandler(logging.NullHandler())  # without a configured handler: dropped, not printed

# ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (llama_cpp._logger maps an older order).
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONTINUATION = 5

Listener = Callable[[int, str], None]  # (Python logging level, one line without its newline)


class _Router:
    """Joins fragments into lines and hands each line to logging and to the listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = ""
        self._level = logging.DEBUG
        self.listeners: list[Listener] = []

    def receive(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        with self._lock:
            if level != _CONTINUATION:
                self._emit(self._buffer)
                self._buffer = ""
                self._level = _LEVELS.get(level, logging.DEBUG)
            self._buffer += text.decode("utf-8", errors="replace")
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._emit(line)

    def flush(self) -> None:
        with self._lock:
            self._emit(self._buffer)
            self._buffer = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        log.log(self._level, "%s", line)
        for listener in list(self.listeners):
            try:
                listener(self._level, line)
            except Exception:  # noqa: BLE001 - raised into C, it would be printed
                log.debug("log listener %r failed", listener, exc_info=True)


_ROUTER = _Router()
_CALLBACK = llama_cpp.llama_log_callback(_ROUTER.receive)  # alive as long as the module
_installed = False


def install() -> None:
    """Make our callback llama.cpp's log callback (once per process; cheap to call again)."""
    global _installed
    if not _installed:
        llama_cpp.llama_log_set(_CALLBACK, ctypes.c_void_p(0))
        _installed = True


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Also give every line llama.cpp logs to `listener` until the block ends."""
    install()
    _ROUTER.listeners.append(listener)
    try:
        yield
    finally:
        _ROUTER.flush()
        _ROUTER.listeners.remove(listener)


class ErrorLines(list[str]):
    """A listener that keeps the ERROR lines, e.g. to say why a model did not load."""

    def __call__(self, level: int, line: str) -> None:
        if level >= logging.ERROR:
            self.append(line.strip())

    @property
    def first(self) -> str:
        return self[0] if self else ""


class PrintsToLog(io.TextIOBase):
    """A text stream for llama-cpp-python's own Python prints (verbose=True), sent to logging:
    with contextlib.redirect_stderr(PrintsToLog()) nothing reaches a terminal a TUI draws on."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("%s", text.rstrip())
        return len(text)
