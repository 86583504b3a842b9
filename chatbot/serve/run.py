"""Running the app under uvicorn on a socket opened here, so a taken port is one clear error."""

import socket
import sys

import uvicorn

from chatbot.errors import ChatbotError
from chatbot.serve.app import create_app
from chatbot.serve.settings import ServeSettings
from chatbot.serve.turns import Backend

GRACEFUL_SHUTDOWN_S = 10  # replies being written get this long to finish on Ctrl-C


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or ChatbotError saying why not (port taken, unknown address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except OSError as exc:
        raise ChatbotError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host"
        ) from exc


def serve(backend: Backend, settings: ServeSettings, sock: socket.socket, describe: str) -> int:
    """Serve on `sock` (from `listen`) until Ctrl-C or SIGTERM; `describe` names the engine and
    the FAQ for the start line."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"chatbot serve: http://{shown}:{port}/ ({describe}; {settings.parallel} at once, "
        f"{settings.queue} waiting){'; API key required' if settings.api_key else ''}. "
        "Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        create_app(backend, settings),
        log_config=None,  # uvicorn's records go to the chatbot log file, not the terminal
        access_log=False,  # customers' requests are not logged
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0
