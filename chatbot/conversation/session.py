"""One conversation's logic, shared by the app and the headless commands so they cannot drift.

`Session.send` validates the text, asks the turn policy (the FAQ bot's, if any: see
chatbot.conversation.policy) what to do with it, saves it before any generation (a crash
mid-reply loses nothing typed), builds the prompt (system prompt + as much recent history as the
context holds), streams the engine's reply, then saves the reply and one row of the latency
log. Earlier turns always render to the same text (user messages as the model saw them, replies
exactly as generated), so the engine's KV cache for them stays valid.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import assert_never

from chatbot.conversation.policy import (
    AskBack,
    AskModel,
    Checked,
    Choice,
    ReplyNow,
    TurnDecision,
    TurnPolicy,
)
from chatbot.conversation.repetition import RepetitionGuard
from chatbot.conversation.text import clean_text, title_from  # re-exported: used as session.*
from chatbot.engines.base import (
    ChatMessage,
    Engine,
    GenerationOptions,
    GenerationStats,
    TextChunk,
    token_timing,
)
from chatbot.errors import ChatbotError
from chatbot.store.records import Message, TurnRecord
from chatbot.store.store import Store

# When the history must be cut, cut down to this share of the prompt budget, so the next few
# turns keep the same first message and reuse the KV cache instead of shifting every turn.
REFILL_SHARE = 0.7


@dataclass(frozen=True)
class Notice:
    """Something the user should know about this turn (e.g. history left out of the prompt)."""

    text: str
    level: str = "info"  # "info" | "warning"


@dataclass(frozen=True)
class TurnResult:
    """The last item `Session.send` yields: what was saved and measured."""

    conversation_id: int
    user_message_id: int
    assistant_message_id: int
    answer: str
    stopped: bool
    stats: GenerationStats | None  # None for a hand-off (no model call)
    sources: tuple[str, ...] = ()
    handoff: bool = False
    unsupported: tuple[str, ...] = ()  # facts the reply states that its FAQ article does not
    cpu_seconds: float = 0.0
    turn_id: int | None = None
    history_left_out: int = 0  # messages of this conversation not in the prompt
    band: str | None = None  # what the FAQ bot did (chatbot.store.migrations 0007)
    clarify: tuple[Choice, ...] = ()  # the entries an ask-back offers
    quoted: str | None = None  # why the article's text is the answer, not the model's reply


class Session:
    """One conversation: send a message, get a streamed reply; everything saved through Store."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        conversation_id: int | None = None,
        system_prompt: str | None = None,
        policy: TurnPolicy | None = None,
        options: GenerationOptions = GenerationOptions(),  # noqa: B008 (frozen dataclass)
    ):
        self.engine = engine
        self.store = store
        self.policy = policy  # None: plain chat, every message goes to the model as typed
        self.options = options
        self.conversation_id = conversation_id
        self.system_prompt = system_prompt
        if conversation_id is not None:
            stored = store.get_conversation(conversation_id)
            if stored.system_prompt is not None:
                self.system_prompt = stored.system_prompt
        self._cut = 0  # oldest history messages left out of the prompt
        self.last_result: TurnResult | None = None

    def messages(self) -> list[Message]:
        """This conversation's saved messages (empty before the first send)."""
        if self.conversation_id is None:
            return []
        return self.store.messages(self.conversation_id)

    def send(
        self, text: str, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[TextChunk | Notice | TurnResult]:
        """Yield the reply's TextChunks (and Notices), then one TurnResult.

        Raises ChatbotError for an empty message, or one too long for the context (after
        saving it: nothing typed is lost).
        """
        clean = clean_text(text)
        if not clean:
            raise ChatbotError("the message is empty; type something to send")
        history = self._history_before(clean)
        decision = self._decide(clean, history)
        if (resolves := decision.resolves) is not None:
            self.store.record_outcome(resolves.message_id, resolves.outcome, resolves.choice)
        match decision:
            case ReplyNow() | AskBack():
                yield from self._without_model(clean, decision)
            case AskModel():
                yield from self._with_model(clean, history, decision, should_stop)
            case _:
                assert_never(decision)

    def last_turn(self) -> list[Message]:
        """The last message the user sent and what came after it (empty before the first)."""
        messages = self.messages()
        starts = [i for i, message in enumerate(messages) if message.role == "user"]
        return messages[starts[-1] :] if starts else []

    def retry(
        self, text: str | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[TextChunk | Notice | TurnResult]:
        """Send the last message again (regenerate), or `text` in its place (edit and resend).

        The turn sent again stays in the store as an alternative, out of the conversation
        and its later prompts; what `send` yields follows.
        """
        turn = self.last_turn()
        if not turn:
            raise ChatbotError("there is no message to send again yet; send one first")
        text = turn[0].content if text is None else text
        if not clean_text(text):
            raise ChatbotError("the message is empty; type something to send")
        self.store.replace_messages([message.id for message in turn])
        yield from self.send(text, should_stop)

    def _decide(self, clean: str, history: list[Message]) -> TurnDecision:
        """The policy's decision for the message; plain chat asks the model with it as typed."""
        if self.policy is None:
            return AskModel(clean)
        try:
            return self.policy.decide(clean, history)
        except Exception:
            self.store.add_message(self.conversation_id, "user", clean)  # keep what was typed
            raise

    def _with_model(
        self,
        clean: str,
        history: list[Message],
        asked: AskModel,
        should_stop: Callable[[], bool],
    ) -> Iterator[TextChunk | Notice | TurnResult]:
        """Save the message (with what the model sees, when that differs), then generate."""
        user = self.store.add_message(
            self.conversation_id,
            "user",
            clean,
            prompt_content=asked.prompt if asked.prompt != clean else None,
        )
        prompt, notice = self._fit(
            model_history(history), {"role": "user", "content": asked.prompt}
        )
        if notice:
            yield notice
        yield from self._generate(user.id, prompt, asked, should_stop)

    def _history_before(self, clean: str) -> list[Message]:
        """The saved messages so far; creates the conversation on the first message."""
        if self.conversation_id is None:
            conversation = self.store.new_conversation(
                title_from(clean), system_prompt=self.system_prompt, model=self.engine.info.model
            )
            self.conversation_id = conversation.id
            return []
        return self.store.messages(self.conversation_id)

    def _without_model(
        self, clean: str, reply: ReplyNow | AskBack
    ) -> Iterator[TextChunk | TurnResult]:
        """A reply the policy gave without the model (a hand-off, an ask-back, an article
        quoted, a line of small talk). Saves the message and the reply."""
        user = self.store.add_message(self.conversation_id, "user", clean)
        asking = isinstance(reply, AskBack)
        answer = self.store.add_message(
            self.conversation_id,
            "assistant",
            reply.text,
            handoff=not asking and reply.handoff,
            sources=() if asking else reply.sources,
            band=reply.band,
            choices=[choice.id for choice in reply.choices] if asking else (),
            quoted=None if asking else reply.quoted,
        )
        yield TextChunk(reply.text)
        yield self._result(user.id, answer, clarify=reply.choices if asking else ())

    def _prompt(self, history: list[Message], newest: ChatMessage) -> list[ChatMessage]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        past = [{"role": m.role, "content": m.prompt_content or m.content} for m in history]
        return [*system, *past, newest]

    def _fit(
        self, history: list[Message], newest: ChatMessage
    ) -> tuple[list[ChatMessage], Notice | None]:
        """The prompt within the context: oldest messages left out (never deleted) when needed."""
        n_ctx = self.engine.info.n_ctx
        budget = n_ctx - min(self.options.max_tokens, n_ctx // 4)
        count = self.engine.count_tokens
        alone = count(self._prompt([], newest))
        if alone > budget:
            raise ChatbotError(
                f"the message is too long for the model: {alone} tokens, and the context "
                f"holds {n_ctx} with room for the reply ({budget} for the prompt). It is saved "
                "in the history; send a shorter message or start with a larger --ctx"
            )
        cut = min(self._cut, len(history))
        if count(self._prompt(history[cut:], newest)) > budget:
            cut = self._new_cut(history, newest, cut, int(budget * REFILL_SHARE))
        notice = None
        if cut > self._cut:
            notice = Notice(
                f"{cut} earlier message{'s' if cut != 1 else ''} of this conversation "
                f"{'are' if cut != 1 else 'is'} left out of the prompt to fit the model's "
                f"{n_ctx}-token context; the history keeps them",
                level="warning",
            )
        self._cut = cut
        return self._prompt(history[cut:], newest), notice

    def _new_cut(self, history: list[Message], newest: ChatMessage, start: int, target: int) -> int:
        """Smallest cut (at a user message, or everything) whose prompt fits in `target` tokens."""
        starts = [i for i in range(start + 1, len(history)) if history[i].role == "user"]
        starts.append(len(history))
        low, high = 0, len(starts) - 1
        while low < high:
            mid = (low + high) // 2
            if self.engine.count_tokens(self._prompt(history[starts[mid] :], newest)) <= target:
                high = mid
            else:
                low = mid + 1
        return starts[low]

    def _generate(
        self,
        user_message_id: int,
        prompt: list[ChatMessage],
        asked: AskModel,
        should_stop: Callable[[], bool],
    ) -> Iterator[TextChunk | TurnResult]:
        """Stream the reply, then save it (also when stopped or failed) and its latency row."""
        cpu_start, started = time.process_time(), time.perf_counter()
        guard = RepetitionGuard()
        stats: GenerationStats | None = None
        first, pieces, failed = None, 0, False
        try:
            for item in self.engine.stream(
                prompt, self.options, lambda: should_stop() or guard.looping
            ):
                if isinstance(item, GenerationStats):
                    stats = item
                else:
                    first, pieces = first or time.perf_counter(), pieces + 1
                    guard.add(item.text)
                    if not asked.hold:  # held: shown once checked, below
                        yield item
        except Exception:
            failed, stats = True, None  # what came is kept, as a stopped reply
            raise
        finally:
            # Reached on normal end, on error and when the consumer closes the generator early.
            if guard.looping and stats is not None:
                stats = replace(stats, stop_reason="repetition")
            reply = None
            if guard.text or stats:
                reply = self._save_reply(guard.kept(), stats, asked, guard.looping)
            if failed:  # the latency log keeps failed turns too, with the time they took
                failure = self._failed_stats(prompt, started, first, pieces)
                cpu = time.process_time() - cpu_start
                self.store.add_turn(self._turn_record(reply and reply.id, failure, cpu))
        if stats is None or reply is None:
            raise ChatbotError("the engine ended without a reply")
        if asked.hold:
            yield TextChunk(reply.content)
        cpu = time.process_time() - cpu_start
        turn_id = self.store.add_turn(self._turn_record(reply.id, stats, cpu))
        yield self._result(
            user_message_id, reply, stats, cpu_seconds=cpu, turn_id=turn_id, left_out=self._cut
        )

    def _result(
        self,
        user_message_id: int,
        reply: Message,
        stats: GenerationStats | None = None,
        *,
        cpu_seconds: float = 0.0,
        turn_id: int | None = None,
        left_out: int = 0,
        clarify: tuple[Choice, ...] = (),
    ) -> TurnResult:
        """The turn as saved, which `send` yields last and keeps as `last_result`."""
        self.last_result = TurnResult(
            conversation_id=self.conversation_id,
            user_message_id=user_message_id,
            assistant_message_id=reply.id,
            answer=reply.content,
            stopped=reply.stopped,
            stats=stats,
            sources=reply.sources,
            handoff=reply.handoff,
            unsupported=reply.unsupported,
            cpu_seconds=cpu_seconds,
            turn_id=turn_id,
            history_left_out=left_out,
            band=reply.band,
            clarify=clarify,
            quoted=reply.quoted,
        )
        return self.last_result

    def _save_reply(
        self, answer: str, stats: GenerationStats | None, asked: AskModel, repeated: bool
    ) -> Message:
        """Save the reply, checked against its article (which may take its place): stopped
        unless it ended by itself, with the facts its article lacks."""
        checked = Checked(answer)
        if self.policy is not None and asked.grounds:
            checked = self.policy.check(answer, asked, repeated)
        return self.store.add_message(
            self.conversation_id,
            "assistant",
            checked.text,
            stopped=stats is None or stats.stop_reason == "cancelled",
            sources=asked.sources,
            unsupported=checked.unsupported,
            band=asked.band,
            quoted=checked.quoted,
            generated=answer if checked.text != answer else None,
        )

    def _failed_stats(
        self, prompt: list[ChatMessage], started: float, first: float | None, pieces: int
    ) -> GenerationStats:
        """The latency row of a reply the engine failed in: what came, and when, until then."""
        end = time.perf_counter()
        ttft_ms, decode_tps = token_timing(started, first, end, pieces)
        try:
            prompt_tokens = self.engine.count_tokens(prompt)  # counted before: no new work
        except ChatbotError:
            prompt_tokens = 0
        return GenerationStats(
            prompt_tokens=prompt_tokens,
            cached_tokens=0,
            completion_tokens=pieces,
            ttft_ms=ttft_ms,
            decode_tps=decode_tps,
            total_ms=(end - started) * 1000,
            stop_reason="error",
        )

    def _turn_record(
        self, message_id: int | None, stats: GenerationStats, cpu: float
    ) -> TurnRecord:
        info = self.engine.info
        return TurnRecord(
            conversation_id=self.conversation_id,
            message_id=message_id,
            cpu_seconds=cpu,
            model_file=info.model,
            quantization=info.quantization,
            threads=info.threads,
            **asdict(stats),  # prompt/cached/completion tokens, ttft, tokens/s, total, stop reason
        )


def model_history(history: list[Message]) -> list[Message]:
    """The history without the exchanges a policy answered itself (a band other than
    "answer"): not the model's lines, and they primed it ("You're welcome! You've got...")."""
    kept: list[Message] = []
    for message in history:
        if message.role != "assistant" or message.band in (None, "answer"):
            kept.append(message)
        elif kept and kept[-1].role == "user":
            kept.pop()  # with the message it answered
    return kept
