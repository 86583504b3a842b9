"""A bounded load test on loopback: 16 customers send 20 requests each to one server.

Every request gets a reply or a clear 503 (with Retry-After), the store holds exactly the
accepted turns (a message, a reply and a latency row each), and the server's memory after the
run is within 10% of what it was after the first 20 requests. Replies are 3 tokens long: the
point is the server's bookkeeping under load, not the model. It stops by itself: a fixed number
of requests, and a deadline.
"""

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from tests.serve.conftest import running_server

pytestmark = pytest.mark.slow
CLIENTS, REQUESTS = 16, 20
FIRST = 20  # requests before the first memory reading
DEADLINE_S = 600
# Every conversation asks the same questions, so the engine's saved KV states (a cache bounded
# at hundreds of MiB, which a run of many different conversations fills by design) stay a few
# small entries, and memory that grows is the server's own.
QUESTIONS = [f"Hello, this is question {n} of my conversation." for n in range(1, 6)]
TURNS_PER_CONVERSATION = len(QUESTIONS)  # then the customer starts a new conversation


@dataclass
class Customer:
    """One client: its requests so far, their outcomes, and its conversation."""

    number: int
    client: httpx.Client
    sent: int = 0
    token: str | None = None
    turns_in_conversation: int = 0
    outcomes: Counter = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)  # the token of each accepted turn
    problems: list[str] = field(default_factory=list)

    def send(self) -> None:
        if self.turns_in_conversation >= TURNS_PER_CONVERSATION:
            self.token, self.turns_in_conversation = None, 0
        body = {
            "messages": [{"role": "user", "content": QUESTIONS[self.turns_in_conversation]}],
            "max_tokens": 3,
            "temperature": 0,
            **({"conversation_id": self.token} if self.token else {}),
        }
        self.sent += 1
        response = self.client.post("/v1/chat/completions", json=body)
        self.outcomes[response.status_code] += 1
        if response.status_code == 200:
            reply = response.json()
            if not reply["choices"][0]["message"]["content"].strip():
                self.problems.append(f"empty reply: {reply}")
            self.token = reply["conversation_id"]
            self.turns_in_conversation += 1
            self.accepted.append(self.token)
        elif response.status_code == 503:
            if int(response.headers["Retry-After"]) < 1 or "busy" not in response.text:
                self.problems.append(f"unclear 503: {response.headers} {response.text}")
            time.sleep(0.2)  # a short pause: the test is about the 503, not about waiting
        else:
            self.problems.append(f"HTTP {response.status_code}: {response.text}")


def run_until(customers: list[Customer], counts: list[int], deadline: float) -> None:
    """Each customer sends requests until it has sent counts[i] (in threads, all at once)."""

    def work(customer: Customer, target: int) -> None:
        while customer.sent < target and time.monotonic() < deadline:
            customer.send()

    threads = [
        threading.Thread(target=work, args=pair) for pair in zip(customers, counts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(scope="module")
def server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-load")
    args = ("--model", str(real_model), "--parallel", "2", "--queue", "10", "--max-tokens", "8")
    # A cache folder of its own: saved KV states from earlier runs are not loaded into memory.
    with running_server(folder, *args, env={"CHATBOT_CACHE_DIR": str(folder / "cache")}) as s:
        yield s


def test_sixteen_customers_twenty_requests_each(server, measurement):
    process = psutil.Process(server.process.pid)
    deadline = time.monotonic() + DEADLINE_S
    clients = [server.client() for _ in range(CLIENTS)]
    customers = [Customer(n, client) for n, client in enumerate(clients)]
    started = time.monotonic()
    # The first 20 come from all 16 customers at once, as the rest do: the memory that serving
    # many at once takes (threads, buffers, allocator arenas) is in place at the first reading.
    first = [2 if n < FIRST - CLIENTS else 1 for n in range(CLIENTS)]
    run_until(customers, first, deadline)
    rss_first = settled_rss(process)
    run_until(customers, [REQUESTS] * CLIENTS, deadline)
    rss_after = settled_rss(process)
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()

    assert sum(c.sent for c in customers) == CLIENTS * REQUESTS, "the deadline passed"
    problems = [p for c in customers for p in c.problems]
    assert not problems, problems[:5]
    outcomes = sum((c.outcomes for c in customers), Counter())
    assert set(outcomes) <= {200, 503} and outcomes[200] > 0
    accepted = [token for c in customers for token in c.accepted]
    store = server.store()
    try:
        messages = [m for token in set(accepted) for m in _messages(server, store, token)]
        turns = store.turns()
    finally:
        store.close()
    roles = Counter(m.role for m in messages)
    assert roles == {"user": len(accepted), "assistant": len(accepted)}
    assert len(turns) == len(accepted)
    assert all(Counter(accepted)[t] <= TURNS_PER_CONVERSATION for t in set(accepted))
    assert rss_after <= rss_first * 1.10, (rss_first, rss_after)
    measurement(
        f"{outcomes[200]} replies and {outcomes[503]} 503s in {elapsed:.0f} s; server RSS "
        f"{rss_first / 2**20:.0f} MiB after {FIRST} requests, {rss_after / 2**20:.0f} MiB after "
        f"{CLIENTS * REQUESTS}"
    )


def settled_rss(process: psutil.Process) -> int:
    """The server's resident memory once the saved KV states still queued for disk are written
    (a short wait; nothing is being asked meanwhile)."""
    time.sleep(1.0)
    return process.memory_info().rss


def _messages(server, store, token: str) -> list:
    conversation_id = store.conversation_for_token(token)
    assert conversation_id is not None
    return store.messages(conversation_id)
