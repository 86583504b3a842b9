"""Retrying the few SQLite steps that fail at once instead of waiting for the busy timeout.

SQLite skips the busy handler where waiting could deadlock: two connections switching a new
file to WAL at the same moment, or opening a WAL file while its last user is closing it (see
sqlite.org/wal.html, "Sometimes Queries Return SQLITE_BUSY"). The step simply has to be tried
again once the other side is done.
"""

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def retry_while_busy(step: Callable[[], T], timeout_s: float, pause_s: float = 0.02) -> T:
    """Run `step`, again and again while SQLite says busy, until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + pause_s > deadline:
                raise
            time.sleep(pause_s)
