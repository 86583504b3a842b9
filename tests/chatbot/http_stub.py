"""A real HTTP server on 127.0.0.1 that answers fixed routes, for the remote engine's tests.

It can answer late, answer garbage, drop the connection half-way through a body, and stand in
for a proxy (a proxied request names the whole URL; it is routed by its path all the same).
Every request is recorded with its headers, so a test can see what the client sent and where.
"""

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from chatbot.store.store import Store


@dataclass(frozen=True)
class Reply:
    """What the stub answers on one path."""

    status: int = 200
    kind: str = "application/json"
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    cut_after: int | None = None  # send only this many body bytes, then drop the connection


@dataclass(frozen=True)
class Request:
    """One request the stub received; `target` is the whole URL when it came through a proxy."""

    method: str
    target: str
    body: bytes
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


Route = tuple[int, str, bytes, float]  # status, content type, body, delay: a Reply in short


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sse(*events: object, done: bool = True) -> bytes:
    """A server-sent event stream of JSON events, ended like OpenAI's unless `done` is False."""
    stream = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
    return stream + (b"data: [DONE]\n\n" if done else b"")


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


@contextmanager
def stub_server(routes: dict[str, Reply | Route]) -> Iterator[tuple[str, list[Request]]]:
    """Serve `routes` (path "*": every other path; else 404) until the block ends; yields the
    URL and the requests."""
    seen: list[Request] = []
    replies = {path: r if isinstance(r, Reply) else Reply(*r) for path, r in routes.items()}

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(self.command, self.path, body, dict(self.headers.items()))
            seen.append(request)
            reply = replies.get(request.path) or replies.get("*", Reply(404, "text/plain"))
            time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.kind)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body[: reply.cut_after])
                if reply.cut_after is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def chatbot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a child process: real exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "chatbot.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def saved_messages(db: Path) -> list[tuple[str, str]]:
    store = Store(db)
    try:
        return [
            (m.role, m.content) for c in store.list_conversations() for m in store.messages(c.id)
        ]
    finally:
        store.close()
