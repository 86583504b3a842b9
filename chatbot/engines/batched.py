"""Many customers at once: one llama.cpp context decodes every active conversation together.

As llama.cpp's own server does with `--parallel N`: the context holds N sequences (slots), each
with its own KV cells (n_ctx tokens each), and one scheduler thread builds a single `llama_batch`
per step from the next token of every sequence that is replying plus the prompt tokens of those
just admitted, decodes it, and samples each sequence with its own sampler chain. A step with four
tokens costs little more than a step with one (the weights are read once per step), so four
customers share the machine instead of queueing for it; on 2 cores this beat a pool of engines
(figures in bench/serve_bench.py and the README).

Callers on any number of threads call `stream()`; requests beyond N wait for a free slot. A slot
is given to the request whose prompt shares most with what its cells hold, so a returning
customer usually finds the history still there; when another conversation took the slot, the
saved state (chatbot.engines.kv_cache) is loaded back instead of evaluating the history again.
"""

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import llama_cpp

from chatbot.engines.base import (
    ChatMessage,
    GenerationOptions,
    GenerationStats,
    TextChunk,
    room_for_reply,
    token_timing,
)
from chatbot.engines.kv_cache import KVCache, read_sequence, write_sequence
from chatbot.engines.llama import N_BATCH, LlamaEngine
from chatbot.engines.offload import OffloadSettings
from chatbot.engines.sequences import Request, Slot, batch_context, best_slot
from chatbot.engines.threads import ThreadTuner, Tuning, start_threads
from chatbot.errors import EngineError
from converter.gguf_keys import CHAT_CTX

PARALLEL = 4
TOKENIZER_CTX = 256  # the tokenizing engine's own context: llama.cpp's smallest, never decoded
POLL_S = 0.05  # how often a waiting caller asks its should_stop


class BatchedEngine:
    """Engine for several callers at once: continuous batching over `parallel` sequences."""

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = CHAT_CTX,
        n_threads: int | None = None,
        *,
        parallel: int = PARALLEL,
        offload: OffloadSettings | None = None,
        kv_cache: KVCache | None = None,
        tuning: Tuning | None = None,
    ):
        """Load the model once; `n_ctx` is each sequence's context, `parallel` the slots.

        Without `n_threads` the thread counts follow the machine's load (engines.threads).
        """
        if parallel < 1:
            raise EngineError(f"parallel must be at least 1, got {parallel}")
        tuning = tuning or Tuning()
        threads = n_threads or start_threads(tuning)
        # Prompt rendering, tokenizing, pieces and load errors: the one-customer engine's own.
        self._text = LlamaEngine(model_path, TOKENIZER_CTX, 1, offload=offload)
        self.path = self._text.path
        self.kv_cache = kv_cache
        self.parallel = parallel
        self._ctx = batch_context(self._text.llm, n_ctx, parallel, threads)
        ctx = self._ctx.ctx
        self.tuner = ThreadTuner(ctx, threads, fixed=bool(n_threads), tuning=tuning)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocab = self._text.llm._model.vocab  # noqa: SLF001
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._slots = [Slot(seq) for seq in range(parallel)]
        self._waiting: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._text_lock = threading.Lock()
        base = self._text.info
        self.info = replace(
            base,
            n_ctx=llama_cpp.llama_n_ctx_seq(ctx),
            threads=threads,
            backend=f"{base.backend}, {parallel} sequences batched",
            settings={**base.settings, "parallel": parallel},
        )
        self._thread = threading.Thread(target=self._run, name="batched-decode", daemon=True)
        self._thread.start()

    # -- the Engine protocol, called from any thread --------------------------------------

    def tokens(self, messages: list[ChatMessage]) -> list[int]:
        with self._text_lock:  # close() frees the model the tokenizer reads
            if self._closing:
                raise EngineError("the engine is closed")
            return self._text.tokens(messages)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.tokens(messages))

    @property
    def waiting(self) -> int:
        """Requests waiting for a free slot."""
        return len(self._waiting)

    def stream(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[TextChunk | GenerationStats]:
        tokens = self.tokens(messages)
        room = room_for_reply(len(tokens), self.info.n_ctx)
        hit = self.kv_cache.lookup(tokens) if self.kv_cache is not None else None
        request = Request(tokens, min(options.max_tokens, room), options, hit)
        if should_stop():
            request.cancel.set()
        with self._cond:
            if self._closing:
                raise EngineError("the engine is closed")
            self._waiting.append(request)
            self._cond.notify()
        try:
            yield from self._receive(request, should_stop)
        finally:
            request.cancel.set()  # the caller stopped reading: free the slot

    def _receive(
        self, request: Request, should_stop: Callable[[], bool]
    ) -> Iterator[TextChunk | GenerationStats]:
        while True:
            try:
                item = request.out.get(timeout=POLL_S)
            except queue.Empty:
                if should_stop():
                    request.cancel.set()
                continue
            if isinstance(item, Exception):
                raise item
            yield item
            if isinstance(item, GenerationStats):
                return
            if should_stop():
                request.cancel.set()

    def close(self) -> None:
        """Stop the scheduler (replies in progress end with an error), then free the model."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        with self._text_lock:
            self._text.close()
        if self.kv_cache is not None:
            self.kv_cache.close()

    # -- the scheduler thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._waiting and not self._busy():
                    self._cond.wait()
                if self._closing:
                    break
                admitted = self._take_waiting()
            for slot, request in admitted:
                self._admit(slot, request)
            if self._busy():
                self._step()
        closed = EngineError("the engine was closed")
        for slot in self._slots:
            if slot.request is not None:
                slot.request.out.put(closed)
                slot.end()
        for request in self._waiting:
            request.out.put(closed)

    def _busy(self) -> bool:
        return any(slot.request is not None for slot in self._slots)

    def _take_waiting(self) -> list[tuple[Slot, Request]]:
        """Waiting requests paired with free slots, first come first served."""
        free = [slot for slot in self._slots if slot.request is None]
        taken = []
        while self._waiting and free:
            request = self._waiting.popleft()
            slot = best_slot(free, request.tokens)
            free.remove(slot)
            slot.request = request  # reserved until _admit begins it
            taken.append((slot, request))
        return taken

    def _admit(self, slot: Slot, request: Request) -> None:
        """Reuse what the slot holds, or a saved state when it covers more; then begin."""
        if request.cancel.is_set():
            slot.begin(request, 0)
            self._finish(slot, "cancelled")
            return
        limit = len(request.tokens) - 1  # the last prompt token is evaluated: its logits
        held = min(slot.holds(request.tokens), limit)
        hit = request.hit
        if hit is not None and hit.common >= held + self.kv_cache.min_tokens:
            restored = write_sequence(self._ctx.ctx, slot.seq, hit)
            held = hit.common if restored else 0
        else:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, held, -1)
        slot.tokens = request.tokens[:held]
        slot.begin(request, held)

    def _step(self) -> None:
        """One llama_decode over every sequence with work, then one sample per reply."""
        outputs, prompt_tokens = self._fill_batch()
        if self._batch.n_tokens == 0:
            return
        start = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
        self.tuner.step(time.perf_counter() - start, prompt_tokens)
        if status != 0:
            self._fail(EngineError(f"llama.cpp failed while generating: llama_decode {status}"))
            return
        for slot, index in outputs:
            token = llama_cpp.llama_sampler_sample(slot.sampler, self._ctx.ctx, index)
            self._emit(slot, token)

    def _fill_batch(self) -> tuple[list[tuple[Slot, int]], int]:
        """Next tokens of the replies first, then prompt tokens up to N_BATCH in all; the
        sequences to sample after the decode (slot, batch index) and the prompt tokens added."""
        batch, outputs, n = self._batch, [], 0
        for slot in self._slots:
            if slot.request is not None and slot.request.cancel.is_set():
                self._finish(slot, "cancelled")
        for slot in self._slots:
            if slot.request is not None and slot.next_token is not None:
                self._add(n, slot.next_token, len(slot.tokens), slot.seq, True)
                slot.tokens.append(slot.next_token)
                slot.next_token = None
                outputs.append((slot, n))
                n += 1
        decoding = n
        for slot in self._slots:
            if slot.request is None or not slot.pending or n == N_BATCH:
                continue
            take, slot.pending = slot.pending[: N_BATCH - n], slot.pending[N_BATCH - n :]
            for token in take:
                self._add(n, token, len(slot.tokens), slot.seq, not slot.pending)
                slot.tokens.append(token)
                n += 1
            if not slot.pending:
                outputs.append((slot, n - 1))
        batch.n_tokens = n
        return outputs, n - decoding

    def _add(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _emit(self, slot: Slot, token: int) -> None:
        """A sampled token: the reply's end, or its text sent to the caller."""
        request = slot.request
        slot.last = time.perf_counter()
        slot.sampled += 1
        if slot.first is None:
            slot.first = slot.last
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        slot.completion += 1
        text = slot.decoder.decode(self._text._piece(token))  # noqa: SLF001
        if text:
            request.out.put(TextChunk(text))
        if slot.completion >= request.max_new:
            self._finish(slot, "length")
        else:
            slot.next_token = token

    def _finish(self, slot: Slot, reason: str) -> None:
        """End a reply: its last text, its state saved for the next turn, then its stats."""
        request = slot.request
        tail = slot.decoder.decode(b"", final=True)
        if tail:
            request.out.put(TextChunk(tail))
        if self.kv_cache is not None and slot.sampled:
            data = read_sequence(self._ctx.ctx, slot.seq)
            self.kv_cache.store(slot.tokens, len(request.tokens), data)
        ttft_ms, decode_tps = token_timing(request.start, slot.first, slot.last, slot.sampled)
        self.info = replace(self.info, threads=self.tuner.threads)  # for the turn's record
        request.out.put(
            GenerationStats(
                prompt_tokens=len(request.tokens),
                cached_tokens=slot.cached,
                completion_tokens=slot.completion,
                ttft_ms=ttft_ms,
                decode_tps=decode_tps,
                total_ms=(time.perf_counter() - request.start) * 1000,
                stop_reason=reason,
            )
        )
        slot.end()

    def _fail(self, error: EngineError) -> None:
        """A failed decode leaves the cells unknown: every reply in progress ends with it."""
        for slot in self._slots:
            if slot.request is not None:
                slot.request.out.put(error)
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
                slot.tokens = []
                slot.end()
