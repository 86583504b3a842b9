"""`chatbot serve` as a real subprocess on a free loopback port, and helpers to talk to it.

Servers run the real SmolLM2 (from the model cache `make model` fills); each has its own
database in a temp folder, which the tests open to check what was saved.
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chatbot.store.store import Store

REPO = Path(__file__).resolve().parents[2]
STORE_FAQ = REPO / "data/faq/store_faq.jsonl"
START_TIMEOUT_S = 120


@dataclass
class Server:
    """A running `chatbot serve`: its URL, database and process."""

    url: str
    db: Path
    process: subprocess.Popen
    log: Path

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **options)

    def store(self) -> Store:
        return Store(self.db)

    def conversation(self, token: str) -> int:
        """The row id behind a customer's token (asserted to exist)."""
        store = self.store()
        try:
            found = store.conversation_for_token(token)
        finally:
            store.close()
        assert found is not None, f"no conversation for token {token!r}"
        return found


def isolated_env(folder: Path) -> dict[str, str]:
    """A data folder and an empty config file of the test's own (no user settings leak in)."""
    config = folder / "config.toml"
    config.touch()
    return {"CHATBOT_DATA_DIR": str(folder / "data"), "CHATBOT_CONFIG": str(config)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `chatbot serve ARGS` on a free port; stop it (SIGTERM) afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db, log = folder / "chat.db", folder / "serve.log"
    command = [sys.executable, "-m", "chatbot.cli", "serve", "--port", str(port), "--db", str(db)]
    environment = {**os.environ, **isolated_env(folder), **(env or {})}
    with log.open("w") as out:
        process = subprocess.Popen([*command, *args], stdout=out, stderr=out, env=environment)
    server = Server(f"http://127.0.0.1:{port}", db, process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"chatbot serve exited:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"chatbot serve did not start in {START_TIMEOUT_S} s:\n{server.log.read_text()}")


@pytest.fixture(scope="session")
def real_model(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct Q4_K_M, the default model (built into the cache once)."""
    return smollm2_gguf("Q4_K_M")


def chat(message: str, **fields) -> dict:
    """A chat completion request with only the new message, greedy and short by default."""
    return {
        "messages": [{"role": "user", "content": message}],
        "temperature": 0,
        "max_tokens": 16,
        **fields,
    }


def sse_events(response: httpx.Response) -> list[dict | str]:
    """The data of each server-sent event: parsed JSON, or the final "[DONE]"."""
    found: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def saved_turns(server: Server, token: str) -> tuple[list, list]:
    """(messages, latency rows) saved for a customer's conversation."""
    conversation_id = server.conversation(token)
    store = server.store()
    try:
        return store.messages(conversation_id), store.turns(conversation_id)
    finally:
        store.close()
