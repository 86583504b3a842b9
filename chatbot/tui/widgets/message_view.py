"""The conversation: one bubble per message, Markdown rendered while the reply streams in.

The reply worker posts `ReplyChunk`s and one `ReplyEnded` to the streaming bubble (in order,
from its thread); the bubble feeds a `MarkdownStream`, which batches updates instead of
re-rendering the whole reply per token, and the scroll view stays anchored to the bottom.
Every line break of a message is shown as typed (Markdown would join lines into one).
When the view has focus, up and down select a message for the copy commands.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from chatbot.conversation.session import TurnResult
from chatbot.store.records import Message as StoredMessage
from chatbot.tui.clipboard import CodeCursor, code_blocks, copied_code_note

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase

HANDOFF_LABEL = "Handed off to a human agent"
ROLE_TITLES = {"user": "You", "assistant": "Assistant"}
PERSON_TITLE = "Support team"  # a person's reply to a hand-off (`chatbot handoffs --reply`)


@dataclass
class ReplyChunk(Message, bubble=False):
    """A piece of the reply, posted from the reply worker's thread."""

    text: str


@dataclass
class ReplyNotice(Message):
    """Something the session wants the user to know (shown in the view and as a notification)."""

    text: str
    level: str = "info"


@dataclass
class ReplyEnded(Message):
    """The reply is over: `result` when the session saved it, else `error` says why not.

    Handled first by the streaming bubble (to close its stream), then bubbles to the app.
    """

    result: TurnResult | None
    error: str | None = None
    text: str = ""  # what the user sent, for the app to put back when it was not saved
    user_saved: bool = True


def keep_line_breaks() -> MarkdownIt:
    """The view's Markdown parser: GitHub-like, with each line break kept as typed (a soft
    break, which Markdown shows as a space, becomes a hard one), and HTML shown as the text
    it is (the view drops HTML tokens: a customer's "<div>my order</div>" showed nothing)."""
    parser = MarkdownIt("gfm-like", {"html": False})
    parser.core.ruler.push("hard_breaks", _hard_breaks)
    return parser


def _hard_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def cited_entries(sources: Iterable[str], knowledge_base: "KnowledgeBase | None") -> Content:
    """The FAQ entries a reply was grounded on: id and question (ids alone without the FAQ)."""
    lines = []
    for faq_id in sources:
        entry = knowledge_base.entry(faq_id) if knowledge_base is not None else None
        lines.append(f"  [{faq_id}] {entry.question}" if entry else f"  [{faq_id}]")
    return Content("Sources:\n" + "\n".join(lines)) if lines else Content("")


def fact_warning(
    unsupported: Iterable[str], sources: list[str], knowledge_base: "KnowledgeBase | None"
) -> Content:
    """Facts the reply made up, and the cited article's own words to trust instead."""
    unsupported = list(unsupported)
    if not unsupported:
        return Content("")
    cited = [knowledge_base.entry(faq_id) for faq_id in sources] if knowledge_base else []
    article = " ".join(f'"{entry.answer}"' for entry in cited if entry is not None)
    says = f" The article says: {article}" if article else ""
    return Content(
        f"⚠ Not in the article: {', '.join(unsupported)}. Check before relying on it.{says}"
    )


class MessageBubble(Vertical):
    """One message: who said it, the Markdown body, and a footer (sources, stopped, status)."""

    def __init__(
        self, role: str, content: str = "", *, knowledge_base: "KnowledgeBase | None" = None
    ) -> None:
        super().__init__(classes=f"bubble {role}")
        self.role = role
        self._initial = content
        self._knowledge_base = knowledge_base
        self._stream: MarkdownStream | None = None

    def compose(self):
        yield Label(ROLE_TITLES.get(self.role, self.role), classes="role")
        yield Markdown(self._initial, classes="body", parser_factory=keep_line_breaks)
        yield Static("", classes="footer")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(".body", Markdown)

    @property
    def text(self) -> str:
        """The Markdown source shown so far."""
        return self.markdown.source

    def show_outcome(
        self,
        *,
        stopped: bool,
        sources: Iterable[str],
        handoff: bool,
        unsupported: Iterable[str] = (),
    ) -> None:
        """Mark the bubble as stopped / handed off; list the cited FAQ entries and made-up facts."""
        sources = list(sources)
        self.set_class(stopped, "stopped")
        self.set_class(handoff, "handoff")
        role = self.query_one(".role", Label)
        if handoff:
            role.update(Content(f"Assistant · {HANDOFF_LABEL}"))
        parts = [cited_entries(sources, self._knowledge_base)] if not handoff else []
        warning = fact_warning(unsupported, sources, self._knowledge_base)
        parts.append(warning)
        self.set_class(bool(warning), "unsupported")
        if stopped:
            parts.append(Content("■ Stopped before the end: this is the partial reply"))
        footer = Content("\n").join(part for part in parts if part)
        self.query_one(".footer", Static).update(footer)
        self.set_class(bool(footer), "has-footer")

    def start_stream(self) -> None:
        """Get ready for ReplyChunks; call once the bubble is mounted."""
        self.add_class("streaming")
        self.query_one(".footer", Static).update(Content("writing… (Esc stops)"))
        self.add_class("has-footer")
        self._stream = Markdown.get_stream(self.markdown)

    async def on_reply_chunk(self, message: ReplyChunk) -> None:
        if self._stream is not None:
            await self._stream.write(message.text)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.remove_class("streaming")
        done = message.result
        if done is not None and done.answer != self.text:
            await self.markdown.update(done.answer)  # a loop cut off: show what was kept
        self.show_outcome(
            stopped=bool(done and done.stopped),
            sources=done.sources if done else (),
            handoff=bool(done and done.handoff),
            unsupported=done.unsupported if done else (),
        )


class MessageView(VerticalScroll, can_focus=True):
    """The scrollable conversation, anchored to the bottom while a reply streams."""

    BINDINGS = [
        Binding("up", "select(-1)", "Previous message", show=False),
        Binding("down", "select(1)", "Next message", show=False),
        Binding("y", "copy_message", "Copy the message", show=False),
        Binding("c", "copy_code", "Copy a code block", show=False),
    ]

    def __init__(
        self, *, knowledge_base: "KnowledgeBase | None" = None, id: str | None = None
    ) -> None:  # noqa: A002
        super().__init__(id=id)
        self.knowledge_base = knowledge_base
        self._code = CodeCursor()

    @property
    def selected(self) -> MessageBubble | None:
        found = self.query(".bubble.-selected")
        return found.first(MessageBubble) if found else None

    def last_reply(self) -> MessageBubble | None:
        replies = self.query(".bubble.assistant")
        return replies.last(MessageBubble) if replies else None

    def action_select(self, step: int) -> None:
        """Select the previous or next message (the last one first) and bring it into view."""
        bubbles = list(self.query(MessageBubble))
        if not bubbles:
            return
        current = self.selected
        index = bubbles.index(current) + step if current else len(bubbles) - 1
        chosen = bubbles[max(0, min(index, len(bubbles) - 1))]
        for bubble in bubbles:
            bubble.set_class(bubble is chosen, "-selected")
        self.release_anchor()
        chosen.scroll_visible(animate=False)

    def action_copy_message(self) -> None:
        """Copy the selected message, else the last reply, to the clipboard (as Markdown)."""
        bubble = self.selected or self.last_reply()
        if bubble is None or not bubble.text:
            self.notify("Nothing to copy yet.", markup=False)
            return
        self.app.copy_to_clipboard(bubble.text)
        whose = "the reply" if bubble.role == "assistant" else "your message"
        count = len(bubble.text)
        self.notify(f"Copied {whose} ({count} character{'s' if count != 1 else ''}).")

    def action_copy_code(self) -> None:
        """Copy the next code block of the selected message, else of the conversation, newest
        first: pressed again, the one before."""
        bubbles = [self.selected] if self.selected else list(self.query(MessageBubble))
        blocks = [block for bubble in bubbles for block in code_blocks(bubble.text)]
        found = self._code.next(blocks)
        if found is None:
            self.notify("No code block to copy.", markup=False)
            return
        block, number = found
        self.app.copy_to_clipboard(block.code)
        self.notify(copied_code_note(block, number, len(blocks)), markup=False)

    async def drop_last_turn(self) -> None:
        """Remove the last message the user sent and everything after it (it is sent again)."""
        users = self.query(".bubble.user")
        if users:
            last = users.last()
            await self.remove_children(self.children[self.children.index(last) :])

    def bubble(self, role: str, content: str = "") -> MessageBubble:
        return MessageBubble(role, content, knowledge_base=self.knowledge_base)

    async def show_history(self, messages: list[StoredMessage]) -> None:
        """Replace the view with a conversation's saved messages."""
        await self.remove_children()
        bubbles = [self.bubble(stored.role, stored.content) for stored in messages]
        await self.mount_all(bubbles)
        for bubble, stored in zip(bubbles, messages, strict=True):
            if stored.from_person:
                bubble.query_one(".role", Label).update(Content(PERSON_TITLE))
                bubble.add_class("person")
            elif stored.role == "assistant":
                bubble.show_outcome(
                    stopped=stored.stopped,
                    sources=stored.sources,
                    handoff=stored.handoff,
                    unsupported=stored.unsupported,
                )
        if not messages:
            await self.mount(Static(Content("Start the conversation below."), classes="hint"))
        self.anchor()

    async def start_turn(self, user_text: str) -> MessageBubble:
        """Show the user's message and an empty reply bubble ready to stream into."""
        await self.query(".hint").remove()
        for bubble in self.query(".-selected"):
            bubble.remove_class("-selected")
        reply = self.bubble("assistant")
        await self.mount_all([self.bubble("user", user_text), reply])
        reply.start_stream()
        self.anchor()
        return reply

    async def on_reply_notice(self, message: ReplyNotice) -> None:
        """Show the session's notice (e.g. history left out of the prompt) above the reply."""
        notice = Static(Content(message.text), classes=f"notice {message.level}")
        streaming = self.query(".streaming")
        await self.mount(notice, before=streaming.last() if streaming else None)
