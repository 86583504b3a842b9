"""What `chatbot serve` is started with, and the bind rule that keeps customers' chats private."""

import argparse
import ipaddress
import os
from dataclasses import dataclass

from chatbot.engines.base import GenerationOptions
from chatbot.errors import ChatbotError

API_KEY_ENV = "CHATBOT_API_KEY"  # the key customers' clients send; kept out of the process list
DEFAULT_PORT = 8080
DEFAULT_PARALLEL = 4
DEFAULT_QUEUE = 16
# A customer message longer than this is refused (400): a 4,096-token context holds about
# 12,000 characters, and the history and the reply need most of it.
MAX_MESSAGE_CHARS = 4000
MAX_BODY_BYTES = 1 << 20  # a request body, a full messages list included


@dataclass(frozen=True)
class ServeSettings:
    """The server's options (flags of `chatbot serve`) and limits."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    parallel: int = DEFAULT_PARALLEL
    queue: int = DEFAULT_QUEUE
    cors_origins: tuple[str, ...] = ()
    max_message_chars: int = MAX_MESSAGE_CHARS
    max_reply_tokens: int = GenerationOptions.max_tokens  # a request's default and its limit
    max_body_bytes: int = MAX_BODY_BYTES

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServeSettings":
        """The settings `chatbot serve`'s flags give (the key: --api-key, else $CHATBOT_API_KEY)."""
        return cls(
            host=args.host,
            port=args.port,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            parallel=args.parallel,
            queue=args.queue,
            cors_origins=tuple(args.cors_origin),
            max_reply_tokens=args.max_tokens,
        )

    def check(self) -> "ServeSettings":
        """Self, or ChatbotError for settings that would fail or expose customers' chats."""
        if not 0 <= self.port <= 65535:
            raise ChatbotError(f"--port must be between 0 and 65535, got {self.port}")
        if self.parallel < 1:
            raise ChatbotError(f"--parallel must be at least 1, got {self.parallel}")
        if self.max_reply_tokens < 1:
            raise ChatbotError(f"--max-tokens must be at least 1, got {self.max_reply_tokens}")
        if self.queue < 0:
            raise ChatbotError(f"--queue must be 0 or more, got {self.queue}")
        if self.api_key is not None and not self.api_key.strip():
            raise ChatbotError("--api-key is empty; give a long random key, or leave it out")
        if not is_loopback(self.host) and self.api_key is None:
            raise ChatbotError(
                f"--host {self.host} is reachable from other machines, so the API needs a key: "
                "add --api-key KEY (or set CHATBOT_API_KEY), or keep the default 127.0.0.1 "
                "behind your web server"
            )
        for origin in self.cors_origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ChatbotError(
                    f"--cors-origin {origin!r} must name one site, like https://shop.example"
                )
        return self


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
