"""`chatbot ask`'s turn once the model is loaded: the reply streamed to stdout (or one JSON
object), the FAQ outcome on stderr, and Ctrl-C, SIGTERM or SIGHUP stopping the reply with it
saved (chatbot.cli.signals)."""

import json
import sys
from dataclasses import asdict

from chatbot.cli.signals import StopSignals, write
from chatbot.conversation.session import Notice, Session, TurnResult
from chatbot.engines.base import Engine, TextChunk

# Why the FAQ bot showed the article instead of the model's reply (chatbot.faq.policy.check).
QUOTED_BECAUSE = {
    "fact_check": "stated what the article does not say",
    "repetition": "repeated itself",
    "dropped_facts": "left out some of the article's facts",
    "too_long": "went far beyond the article",
}


def stream_reply(session: Session, text: str, engine: Engine, as_json: bool) -> int:
    """Send `text` and print the reply; the exit code: 0, or 128 + the signal that stopped it."""
    result = None
    with StopSignals() as signals:
        for item in session.send(text, signals.should_stop):
            if isinstance(item, TextChunk) and not as_json:
                if not write(sys.stdout, item.text):
                    signals.output_lost()
            elif isinstance(item, Notice):
                print(f"note: {item.text}", file=sys.stderr)
            elif isinstance(item, TurnResult):
                result = item
    if as_json:
        print(json.dumps(turn_json(result, engine), ensure_ascii=False, indent=2))
    else:
        print(flush=True)
        print_outcome(result)
    if note := signals.note():
        print(f"note: {note}", file=sys.stderr)
    return signals.exit_code or 0


def print_outcome(result: TurnResult | None) -> None:
    """The FAQ outcome on stderr, so stdout stays the answer alone for scripts."""
    if result is not None and result.handoff:
        print("note: handed off to a human agent (`chatbot handoffs` lists it)", file=sys.stderr)
    elif result is not None and result.clarify:
        print(
            f"note: asked back; continue with --conversation {result.conversation_id} and the "
            "number of a choice, or no",
            file=sys.stderr,
        )
    elif result is not None and result.sources:
        print(f"sources: {', '.join(result.sources)}", file=sys.stderr)
        if result.quoted in QUOTED_BECAUSE:
            print(f"note: this is the article's own text: the model's reply "
                  f"{QUOTED_BECAUSE[result.quoted]}", file=sys.stderr)  # fmt: skip
        if result.unsupported:
            print(
                f"note: not in the cited article, check before relying on it: "
                f"{', '.join(result.unsupported)}",
                file=sys.stderr,
            )


def turn_json(result: TurnResult, engine: Engine) -> dict:
    """`chatbot ask --json`'s object: the saved turn, its numbers and the FAQ outcome."""
    stats = asdict(result.stats) if result.stats else {}
    return {
        "conversation_id": result.conversation_id,
        "user_message_id": result.user_message_id,
        "assistant_message_id": result.assistant_message_id,
        "answer": result.answer,
        "stopped": result.stopped,
        **stats,
        "cpu_seconds": result.cpu_seconds,
        "model": engine.info.model,
        "quantization": engine.info.quantization,
        "threads": engine.info.threads,
        "sources": list(result.sources),
        "handoff": result.handoff,
        "unsupported_facts": list(result.unsupported),
        # The FAQ bot: its band, an ask-back's choices (empty otherwise), why the article's
        # own text is the answer (null: the model's reply is).
        "band": result.band,
        "clarify": [{"id": c.id, "question": c.question} for c in result.clarify],
        "quoted": result.quoted,
    }
