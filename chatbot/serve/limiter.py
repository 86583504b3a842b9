"""The bounded request queue: `parallel` turns run, `queue` more wait, the rest are refused.

Refusing at once with a Retry-After (503) keeps a flood of customers from piling up requests
that would time out anyway, and tells well-behaved clients when to come back. All counting
happens on the event loop's thread, so it needs no lock; a ticket is released from there too
(the turn's worker thread schedules the release when it ends).
"""

import asyncio
import math
import time
from collections import deque

RECENT_TURNS = 32  # turn durations kept for the Retry-After estimate


class QueueFull(Exception):
    """Every slot and every place in the queue is taken; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry after {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    """One admitted request: wait for a slot, then release it exactly once."""

    def __init__(self, limiter: "Limiter"):
        self._limiter = limiter
        self._state = "waiting"  # -> "active" -> "done"
        self._started = 0.0

    async def wait(self) -> None:
        """Wait for a slot (in the queue meanwhile)."""
        try:
            await self._limiter._slots.acquire()
        except BaseException:
            self._limiter.waiting -= 1
            self._state = "done"
            raise
        self._limiter.waiting -= 1
        self._limiter.active += 1
        self._state = "active"
        self._started = time.monotonic()

    def release(self) -> None:
        """Give the slot back (or the place in the queue); later calls do nothing."""
        if self._state == "active":
            self._limiter.active -= 1
            self._limiter._slots.release()
            self._limiter._durations.append(time.monotonic() - self._started)
        elif self._state == "waiting":
            self._limiter.waiting -= 1
        self._state = "done"


class Limiter:
    """Admits a request when fewer than parallel + queue are running or waiting."""

    def __init__(self, parallel: int, queue: int):
        self.parallel = parallel
        self.queue = queue
        self.active = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(parallel)
        self._durations: deque[float] = deque(maxlen=RECENT_TURNS)

    def admit(self) -> Ticket:
        """A ticket for this request, or QueueFull when there is no room."""
        if self.active + self.waiting >= self.parallel + self.queue:
            raise QueueFull(self.retry_after())
        self.waiting += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, at the recent turn time."""
        if not self._durations:
            return 1
        mean = sum(self._durations) / len(self._durations)
        ahead = (self.waiting + 1) / self.parallel
        return max(1, math.ceil(mean * ahead))
