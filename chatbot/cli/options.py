"""`chatbot`'s command line: the options, as data where they repeat, and one builder per command.

Only argparse here; chatbot.cli.commands runs the commands. Options shared by every command are
accepted before or after the command name.
"""

import argparse
from pathlib import Path
from typing import Any

from chatbot.engines.base import FAQ_TEMPERATURE, GenerationOptions  # the app's defaults too
from chatbot.serve.settings import DEFAULT_PARALLEL, DEFAULT_PORT, DEFAULT_QUEUE
from converter.gguf_keys import CHAT_CTX

EPILOG = """commands (run `chatbot COMMAND --help` for each):
  (none)     open the chat app
  ask        send one message and print the reply
  history    list conversations
  export     print a conversation as Markdown or JSON
  stats      latency and CPU cost per model
  handoffs   questions the FAQ bot handed to a person
  serve      serve customers: an OpenAI-compatible HTTP API and a web chat page
  faq-eval   measure FAQ retrieval and the hand-off threshold on your own questions
"""


# Options accepted before or after the command: (flag, add_argument keywords with the default).
COMMON_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--model",
        {
            "type": Path,
            "default": None,
            "metavar": "FILE.gguf",
            "help": "GGUF model to run (default: SmolLM2-135M-Instruct Q4_K_M, "
            "built with the converter on first use)",
        },
    ),
    (
        "--db",
        {
            "type": Path,
            "default": None,
            "metavar": "FILE",
            "help": "conversation database (default: chat.db in the user data folder)",
        },
    ),
    (
        "--system",
        {"default": None, "metavar": "TEXT", "help": "system prompt for new conversations"},
    ),
    (
        "--faq",
        {
            "type": Path,
            "default": None,
            "metavar": "FILE",
            "help": "FAQ bot mode: answer from this JSONL/CSV knowledge base, "
            "hand off to a person when it has no answer",
        },
    ),
    (
        "--faq-confidence",
        {
            "type": float,
            "default": None,
            "metavar": "X",
            "help": "FAQ match score (0-1) needed to answer without asking back, instead of "
            "the answer check; lower answers more and asks back less. Check it on real "
            "questions with `chatbot faq-eval` (default: the answer check decides, above a "
            "hand-off threshold measured on the knowledge base itself; printed on start)",
        },
    ),
    (
        "--faq-answer",
        {
            "choices": ("auto", "generate", "quote"),
            "default": "auto",
            "help": "how the FAQ bot answers: the model's reply, checked, else the article's "
            "own text when the reply fails the check (auto); the model's reply always, "
            "flagged when it fails (generate); the article's text only, no model (quote). "
            "Default: auto",
        },
    ),
    (
        "--handoff-reply",
        {
            "default": None,
            "metavar": "TEXT",
            "help": "what the FAQ bot says when it hands off (default: an apology that "
            "offers a member of the support team)",
        },
    ),
    (
        "--server",
        {
            "default": None,
            "metavar": "URL",
            "help": "use an OpenAI-compatible server instead of the embedded model",
        },
    ),
    (
        "--server-proxy",
        {
            "default": None,
            "metavar": "URL",
            "help": "reach --server through this HTTP proxy (default: none; the environment's "
            "HTTP_PROXY and the like are ignored)",
        },
    ),
    (
        "--ctx",
        {
            "type": int,
            "default": CHAT_CTX,
            "metavar": "N",
            "help": f"context window in tokens (default: {CHAT_CTX})",
        },
    ),
    (
        "--threads",
        {
            "type": int,
            "default": None,
            "metavar": "N",
            "help": "fixed CPU threads for generation (default: idle cores, adapted to load)",
        },
    ),
    (
        "--gpu-layers",
        {
            "type": int,
            "default": None,
            "metavar": "N",
            "help": "layers to offload to the GPU, -1 = all (default: the plan stored in the "
            "GGUF by `converter plan`, else 0)",
        },
    ),
    (
        "--flash-attn",
        {
            "action": argparse.BooleanOptionalAction,
            "default": None,
            "help": "flash attention (default: as the GGUF's offload plan says)",
        },
    ),
)


# Options that are never config keys: a secret belongs in the environment, not in a file.
SECRET_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--server-api-key",
        {
            "default": None,
            "metavar": "KEY",
            "help": "API key for a --server that needs one, sent as a Bearer token and never "
            "stored (default: $CHATBOT_SERVER_API_KEY, which other local users cannot see in "
            "the process list, unlike this option)",
        },
    ),
)


# The shared options each command reads, when not all of them (the app, `ask` and `serve` load
# a model and read every one): the others stay out of its --help and are refused after its
# name. Before the command name every shared option is accepted, as the config file sets them.
COMMAND_OPTIONS: dict[str, tuple[str, ...]] = {
    "history": ("--db",),
    "export": ("--db",),
    "stats": ("--db",),
    "handoffs": ("--db",),
    "faq-eval": ("--faq", "--faq-confidence", "--handoff-reply"),
}


def _common(parser: argparse.ArgumentParser, suppress: bool, command: str | None = None) -> None:
    """Add the shared options `command` reads (COMMAND_OPTIONS, else every one); `suppress`
    keeps a sub-parser from overwriting a value given before the command with its default."""
    used = COMMAND_OPTIONS.get(command) if command else None
    group = parser.add_argument_group("model and storage" if used is None else "shared options")
    for flag, options in (*COMMON_OPTIONS, *SECRET_OPTIONS):
        if used is not None and flag not in used:
            continue
        if suppress:
            options = {**options, "default": argparse.SUPPRESS}
        group.add_argument(flag, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatbot",
        description="Offline customer-service chatbot: a terminal chat app running a GGUF "
        "model in-process with llama.cpp, with its history in SQLite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_ask(commands)
    _add_history_and_export(commands)
    _add_faq_eval(commands)
    _add_serve(commands)
    for name, text in (
        (
            "stats",
            "per model: turns, p50/p95 time to first token and "
            "tokens/s, CPU seconds per 1,000 generated tokens",
        ),
        ("handoffs", "questions the FAQ bot handed to a person"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("--json", action="store_true", help="print JSON")
        if name == "handoffs":
            sub.add_argument("--open", action="store_true", help="only those not yet resolved")
            sub.add_argument(
                "--resolve",
                type=int,
                metavar="ID",
                help="mark hand-off ID resolved (the id listed)",
            )
            sub.add_argument(
                "--reply",
                metavar="TEXT",
                help="with --resolve: a person's answer, saved in the conversation where the "
                "customer reads it (the web page shows it; the bot's prompt leaves it out)",
            )
        _common(sub, suppress=True, command=name)
    return parser


def _add_ask(commands: argparse._SubParsersAction) -> None:
    ask = commands.add_parser(
        "ask",
        help="send one message and print the reply as it streams",
        description="Send one message and stream the reply to stdout.",
    )
    ask.add_argument("text", help="the message")
    ask.add_argument(
        "--conversation",
        type=int,
        metavar="ID",
        help="continue this conversation (ids: `chatbot history`)",
    )
    ask.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object at the end instead of streaming text",
    )
    ask.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="sampling temperature, 0 = always the likeliest token (default: "
        f"{GenerationOptions.temperature}; {FAQ_TEMPERATURE} with --faq, which keeps answers "
        "closest to the article)",
    )
    ask.add_argument(
        "--max-tokens",
        type=int,
        default=GenerationOptions.max_tokens,
        metavar="N",
        help="longest reply in tokens (default: %(default)s)",
    )
    ask.add_argument("--seed", type=int, metavar="N", help="sampling seed, for repeatable replies")
    _common(ask, suppress=True)


def _add_history_and_export(commands: argparse._SubParsersAction) -> None:
    history = commands.add_parser(
        "history",
        help="list conversations, newest first",
        description="List conversations, newest first.",
    )
    history.add_argument(
        "--search",
        metavar="TEXT",
        help="only conversations whose title or messages contain these words",
    )
    history.add_argument("--json", action="store_true", help="print JSON")
    _common(history, suppress=True, command="history")

    export = commands.add_parser(
        "export",
        help="print a conversation as Markdown or JSON",
        description="Print a whole conversation to stdout.",
    )
    export.add_argument("id", type=int, help="conversation id (see `chatbot history`)")
    export.add_argument("--format", choices=("md", "json"), default="md", help="default: md")
    _common(export, suppress=True, command="export")


def _add_faq_eval(commands: argparse._SubParsersAction) -> None:
    text = "measure FAQ retrieval and the hand-off threshold on your own labelled questions"
    faq_eval = commands.add_parser(
        "faq-eval",
        help=text,
        description=text[0].upper() + text[1:] + ". Each line of QUESTIONS is "
        '{"question": "...", "expected": "<entry id>"} for a question the FAQ answers, or '
        '"expected": "handoff" (or null) for one it does not. Needs --faq. No model is loaded.',
    )
    faq_eval.add_argument("questions", type=Path, metavar="QUESTIONS", help="a JSONL file")
    faq_eval.add_argument("--json", action="store_true", help="print JSON")
    _common(faq_eval, suppress=True, command="faq-eval")


def _add_serve(commands: argparse._SubParsersAction) -> None:
    text = "serve customers: an OpenAI-compatible HTTP API and a web chat page"
    sub = commands.add_parser(
        "serve",
        help=text,
        description=text[0].upper() + text[1:] + ", on the same store, FAQ and model as the "
        "app. Open http://HOST:PORT/ for the page; POST /v1/chat/completions for the API.",
    )
    sub.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; any other "
        "address needs --api-key)",
    )
    sub.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    sub.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require `Authorization: Bearer KEY` on the API (default: $CHATBOT_API_KEY, "
        "which keeps the key out of the process list)",
    )
    sub.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="replies generated at once (default: %(default)s)",
    )
    sub.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        metavar="N",
        help="requests that may wait for a place; beyond, 503 with Retry-After "
        "(default: %(default)s)",
    )
    sub.add_argument(
        "--max-tokens",
        type=int,
        default=GenerationOptions.max_tokens,
        metavar="N",
        help="longest reply in tokens: what a request gets unless it asks for fewer "
        "(default: %(default)s)",
    )
    sub.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a site whose pages may call the API from the browser, like "
        "https://shop.example (repeatable; default: none)",
    )
    _common(sub, suppress=True)
