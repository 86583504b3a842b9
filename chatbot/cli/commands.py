"""`chatbot`: the chat app, and headless commands over the same store.

The commands and error reporting (the options are in chatbot.cli.options): every ChatbotError
becomes one `error: ...` line on stderr and exit code 2. Heavy modules (llama.cpp, Textual, the
remote client) are imported only by the command that needs them, so `chatbot history` starts at
once; nothing here imports torch or transformers (the default model is built by the converter in
a separate process).
"""

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from chatbot.cli.config import load_config
from chatbot.cli.inputs import check_args, check_ctx
from chatbot.cli.options import build_parser
from chatbot.engines.base import FAQ_TEMPERATURE, Engine, GenerationOptions
from chatbot.errors import ChatbotError, ModelLoadError
from chatbot.paths import data_dir, private_dir, private_file
from chatbot.store.store import Store

if TYPE_CHECKING:  # imported by the commands that need them: `chatbot history` starts at once
    from chatbot.conversation.policy import TurnPolicy
    from chatbot.faq.knowledge_base import KnowledgeBase
    from chatbot.store.records import Handoff
    from chatbot.store.stats import ModelStats


def ensure_default_model() -> Path:
    """The default GGUF, built by the converter in a separate process when missing."""
    from converter.paths import default_gguf_path

    path = default_gguf_path()
    if path.exists():
        return path
    print(f"Building the default model into {path} (first run only)...", file=sys.stderr)
    result = subprocess.run([sys.executable, "-m", "converter", "default"], check=False)
    if result.returncode != 0 or not path.exists():
        raise ModelLoadError(
            "could not build the default model; run `converter default` to see why, "
            "or pass --model FILE.gguf"
        )
    return path


def engine_factory(args: argparse.Namespace, parallel: int | None = None) -> Callable[[], Engine]:
    """A function that loads the engine (the app calls it off the UI thread); with `parallel`,
    the embedded model is the batched engine, decoding that many replies at once."""

    def load() -> Engine:
        if args.server:
            from chatbot.engines.remote import API_KEY_ENV, RemoteEngine

            api_key = args.server_api_key or os.environ.get(API_KEY_ENV) or None  # never kept
            return RemoteEngine(args.server, api_key=api_key, proxy=args.server_proxy)
        from chatbot.engines.kv_cache import open_cache
        from chatbot.engines.llama import LlamaEngine, check_model_file
        from chatbot.engines.offload import resolve_offload

        model = check_model_file(args.model if args.model is not None else ensure_default_model())
        check_ctx(model, args.ctx)  # beyond the training context, before a huge allocation
        offload = resolve_offload(model, gpu_layers=args.gpu_layers, flash_attn=args.flash_attn)
        # Saved KV states: a conversation continued in a new process is not evaluated again.
        kv_cache = open_cache(model, offload)
        if parallel is not None:
            from chatbot.engines.batched import BatchedEngine

            return BatchedEngine(
                model, args.ctx, args.threads, parallel=parallel, offload=offload, kv_cache=kv_cache
            )
        return LlamaEngine(
            model, n_ctx=args.ctx, n_threads=args.threads, offload=offload, kv_cache=kv_cache
        )

    return load


def _knowledge_base(args: argparse.Namespace) -> "KnowledgeBase | None":
    if args.faq is None:
        return None
    from chatbot.cli.faq import open_knowledge_base  # prints the thresholds in use

    return open_knowledge_base(args)


def _faq_policy(kb: "KnowledgeBase | None", args: argparse.Namespace) -> "TurnPolicy | None":
    """The FAQ bot's policy (--faq-answer) over the knowledge base; None without one."""
    if kb is None:
        return None
    from chatbot.cli.faq import faq_policy

    return faq_policy(kb, args)


def _default_temperature(kb: object) -> float:
    """Greedy for FAQ answers, which keeps them closest to the article; else the chat default."""
    return FAQ_TEMPERATURE if kb is not None else GenerationOptions.temperature


def _check_faq_options(args: argparse.Namespace) -> None:
    if args.faq_confidence is not None and not 0.0 <= args.faq_confidence <= 1.0:
        raise ChatbotError(f"--faq-confidence must be between 0 and 1, got {args.faq_confidence}")
    if args.handoff_reply is not None and not args.handoff_reply.strip():
        raise ChatbotError("--handoff-reply is empty; give the text the bot should say")


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _model_loader(args: argparse.Namespace) -> Callable[[Path], Engine]:
    """Loads another GGUF with the same options: the app's per-conversation model choice."""
    return lambda model: engine_factory(argparse.Namespace(**{**vars(args), "model": model}))()


def cmd_chat(args: argparse.Namespace, store: Store) -> int:
    from chatbot.tui.app import ChatApp

    if args.model is None and not args.server:
        # Build before the app starts: the converter's progress must not draw over the screen.
        args.model = ensure_default_model()
    if not args.server:
        check_ctx(args.model, args.ctx)  # one error line, not a notice in the app
    kb = _knowledge_base(args)
    options = GenerationOptions(temperature=_default_temperature(kb))
    app = ChatApp(
        engine_factory(args),
        store,
        system_prompt=args.system,
        knowledge_base=kb,
        options=options,
        load_model=None if args.server else _model_loader(args),
        faq_answer=args.faq_answer,
    )
    app.run()
    return app.return_code or 0  # 128 + the signal's number when SIGTERM or SIGHUP closed it


def cmd_ask(args: argparse.Namespace, store: Store) -> int:
    from chatbot.cli.ask import stream_reply
    from chatbot.conversation.session import Session

    if not args.text:  # cleaned by check_args
        raise ChatbotError("the message is empty; give the text to send")
    if args.conversation is not None:
        store.get_conversation(args.conversation)  # fail before loading the model
    kb = _knowledge_base(args)
    engine = engine_factory(args)()
    options = GenerationOptions(
        max_tokens=args.max_tokens,
        temperature=_default_temperature(kb) if args.temperature is None else args.temperature,
        seed=args.seed,
    )
    session = Session(
        engine,
        store,
        conversation_id=args.conversation,
        system_prompt=args.system,
        policy=_faq_policy(kb, args),
        options=options,
    )
    code = stream_reply(session, args.text, engine, args.json)  # Ctrl-C, SIGTERM, SIGHUP: saved
    engine.close()
    return code


def _minute(stamp: str) -> str:
    """A stored timestamp (see chatbot.store.store.now) shown to the minute: "2026-01-31 12:34"."""
    return stamp[:16].replace("T", " ")


def _print_rows(args: argparse.Namespace, rows: list, empty: str, lines: Callable) -> int:
    """A listing command's output: the rows as JSON with --json; else `lines(row)` for each
    row, or `empty` when there is none."""
    if args.json:
        _print_json([asdict(row) for row in rows])
        return 0
    if not rows:
        print(empty)
    for row in rows:
        print("\n".join(lines(row)))
    return 0


def cmd_history(args: argparse.Namespace, store: Store) -> int:
    return _print_rows(
        args,
        store.list_conversations(args.search),
        "no conversations" + (" match" if args.search else " yet"),
        lambda c: [f"{c.id:>5}  {_minute(c.updated_at)}  {c.title}"],
    )


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    from chatbot.conversation.export import export_conversation

    sys.stdout.write(export_conversation(store, args.id, args.format))
    return 0


def cmd_stats(args: argparse.Namespace, store: Store) -> int:
    code = _print_rows(args, store.stats(), "no turns logged yet", _stats_lines)
    _print_faq_counts(args, store)
    return code


def _print_faq_counts(args: argparse.Namespace, store: Store) -> None:
    """The FAQ bot's answers, ask-backs and their outcome, hand-offs (not with --json)."""
    from chatbot.cli.faq import faq_count_lines

    if not args.json and (lines := faq_count_lines(store.faq_counts())):
        print("\n".join(lines))


def _stats_lines(s: "ModelStats") -> list[str]:
    lines = [
        f"{s.model_file} ({s.quantization}): {s.turns} turn{'s' if s.turns != 1 else ''}",
        f"  time to first token  p50 {s.ttft_p50_ms:8.1f} ms   p95 {s.ttft_p95_ms:8.1f} ms",
        f"  decode speed         p50 {s.tps_p50:8.1f} tok/s p95 {s.tps_p95:8.1f} tok/s",
        f"  CPU per 1,000 generated tokens: {s.cpu_seconds_per_1k_tokens:.1f} s",
    ]
    if any(n for n, _ in s.threads):  # 0: a remote engine, no local threads
        used = ", ".join(f"{n} ({c} turn{'s' if c != 1 else ''})" for n, c in s.threads)
        lines.append(f"  threads per turn: {used}")
    return lines


def cmd_handoffs(args: argparse.Namespace, store: Store) -> int:
    if args.reply is not None and args.resolve is None:
        raise ChatbotError("--reply needs --resolve ID: the hand-off it answers")
    if args.resolve is not None:
        done = store.resolve_handoff(args.resolve, args.reply)
        replied = "; your reply is in the conversation" if args.reply is not None else ""
        print(
            f"hand-off {done.message_id} (conversation {done.conversation_id}) is resolved{replied}"
        )
        return 0
    handoffs = store.handoffs(unresolved=args.open)
    code = _print_rows(args, handoffs, "no hand-offs", _handoff_lines)
    _print_faq_counts(args, store)
    return code


def _handoff_lines(h: "Handoff") -> list[str]:
    """One hand-off: its id (for --resolve), state, and the conversation (`chatbot export ID`);
    "customer" marks one that came through `chatbot serve`."""
    state = "resolved" if h.resolved_at else "open"
    who = "customer " if h.served else ""
    return [
        f"{h.message_id:>5}  {_minute(h.created_at)}  {state:<8}  "
        f"{who}conversation {h.conversation_id}: {h.question}"
        + (f" (then: {h.reply})" if h.reply else "")
    ]


def serve_engine(args: argparse.Namespace) -> Engine:
    """The engine every customer of `chatbot serve` shares: the embedded model decodes up to
    --parallel replies at once in one context (chatbot.engines.batched)."""
    return engine_factory(args, parallel=args.parallel)()


def cmd_serve(args: argparse.Namespace, store: Store) -> int:
    from chatbot.serve.run import listen, serve
    from chatbot.serve.settings import ServeSettings
    from chatbot.serve.turns import Backend

    settings = ServeSettings.from_args(args).check()
    with listen(settings.host, settings.port) as sock:  # a taken port fails before loading
        if args.model is None and not args.server:
            args.model = ensure_default_model()
        kb = _knowledge_base(args)
        engine = serve_engine(args)
        backend = Backend(
            engine,
            store,
            policy=_faq_policy(kb, args),
            system_prompt=args.system,
            temperature=_default_temperature(kb),
            faq_entry=kb.entry if kb is not None else None,
        )
        try:
            faq = f", FAQ {args.faq}" if kb is not None else ""
            return serve(backend, settings, sock, engine.info.model + faq)
        finally:
            engine.close()


def cmd_faq_eval(args: argparse.Namespace, store: Store) -> int:
    from chatbot.faq.evaluation import evaluate, load_questions

    kb = _knowledge_base(args)
    if kb is None:
        raise ChatbotError("faq-eval needs the knowledge base: add --faq FILE")
    questions, warnings = load_questions(args.questions, {entry.id for entry in kb.entries})
    for warning in warnings:
        print(f"warning: {args.questions}: {warning}", file=sys.stderr)
    result = evaluate(kb, questions)
    kb.close()
    if args.json:
        _print_json(asdict(result))
        return 0
    from chatbot.cli.faq import print_faq_eval

    print_faq_eval(result)
    return 0


COMMANDS = {
    None: cmd_chat,
    "ask": cmd_ask,
    "history": cmd_history,
    "export": cmd_export,
    "stats": cmd_stats,
    "handoffs": cmd_handoffs,
    "serve": cmd_serve,
    "faq-eval": cmd_faq_eval,
}


def _log_to_file() -> None:
    """llama.cpp and library warnings go to a log file, never to the terminal."""
    try:
        path = private_file(private_dir(data_dir()) / "chatbot.log")  # user-only, as the store
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    umask = os.umask(0o077)  # what this process creates (files, folders) is its user's alone
    try:
        return _run(argv)
    finally:
        os.umask(umask)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        parser.set_defaults(**load_config())
        args = check_args(parser.parse_args(argv))  # every value by one rule (cli.inputs)
        _log_to_file()
        _check_faq_options(args)
        store = Store(args.db)
        try:
            return COMMANDS[args.command](args, store)
        finally:
            store.close()
    except ChatbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or a second SIGTERM/SIGHUP (cli.signals)
        print("interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
