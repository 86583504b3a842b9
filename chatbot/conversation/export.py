"""A saved conversation as Markdown (to read or share) or JSON (to process)."""

import json
from dataclasses import asdict

from chatbot.errors import ChatbotError
from chatbot.store.store import Store

FORMATS = ("md", "json")
_SPEAKERS = {"user": "You", "assistant": "Assistant", "system": "System"}


def export_conversation(store: Store, conversation_id: int, fmt: str = "md") -> str:
    """The conversation with every message, in the given format ("md" or "json")."""
    if fmt not in FORMATS:
        raise ChatbotError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    conversation = store.get_conversation(conversation_id)
    messages = store.messages(conversation_id)
    if fmt == "json":
        document = {
            "conversation": asdict(conversation),
            "messages": [
                {k: v for k, v in asdict(m).items() if k != "prompt_content"} for m in messages
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    lines = [f"# {conversation.title}", ""]
    details = [f"conversation {conversation.id}", f"started {conversation.created_at}"]
    if conversation.model:
        details.append(f"model {conversation.model}")
    lines += [f"_{', '.join(details)}_", ""]
    if conversation.system_prompt:
        lines += ["**System prompt:**", "", _quote(conversation.system_prompt), ""]
    for message in messages:
        speaker = "Support team" if message.from_person else _SPEAKERS.get(message.role)
        lines += [f"## {speaker or message.role}", "", message.content, ""]
        notes = []
        if message.stopped:
            notes.append("stopped before the end")
        if message.handoff:
            notes.append("handed off to a person")
        if message.sources:
            notes.append("sources: " + ", ".join(message.sources))
        if message.unsupported:
            notes.append("not in the cited article: " + ", ".join(message.unsupported))
        if notes:
            lines += [f"_({'; '.join(notes)})_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())
