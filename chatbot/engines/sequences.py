"""The parts of the batched engine's context: its sequences (slots), requests and samplers.

Kept apart from chatbot.engines.batched, which schedules them: one llama.cpp context of N
sequences, each with a sampler chain like `Llama`'s own, so a batched reply samples as the
one-customer engine's would.
"""

import codecs
import queue
import threading
import time
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals

from chatbot.engines.base import GenerationOptions
from chatbot.engines.kv_cache import CacheHit, common_prefix
from chatbot.engines.llama import N_BATCH

Sampler = llama_cpp.llama_sampler_p_ctypes  # a llama_sampler pointer
MIN_REUSE = 16  # tokens in common for a slot to count as holding this conversation
# Llama._init_sampler's chain for temperature > 0 (its repeat penalty of 1.0 changes nothing).
TOP_K, TYPICAL_P, MIN_P = 40, 1.0, 0.05


def make_sampler(options: GenerationOptions) -> Sampler:
    """A sampler chain for one reply: greedy at temperature 0, else seeded like `Llama`."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if options.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = options.seed if options.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(TOP_K),
        llama_cpp.llama_sampler_init_typical(TYPICAL_P, 1),
        llama_cpp.llama_sampler_init_top_p(options.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
        llama_cpp.llama_sampler_init_temp(options.temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def batch_context(
    llm: llama_cpp.Llama, n_ctx: int, parallel: int, threads: int
) -> internals.LlamaContext:
    """A context of `parallel` sequences of `n_ctx` tokens each on the loaded model.

    Not unified: each sequence has cells of its own, so a saved state always fits back.
    """
    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx = n_ctx * parallel
    params.n_batch = params.n_ubatch = N_BATCH
    params.n_seq_max = parallel
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = threads
    return internals.LlamaContext(model=llm._model, params=params, verbose=False)  # noqa: SLF001


@dataclass
class Request:
    tokens: list[int]
    max_new: int
    options: GenerationOptions
    hit: CacheHit | None  # a saved state for this prompt, looked up by the caller's thread
    start: float = field(default_factory=time.perf_counter)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancel: threading.Event = field(default_factory=threading.Event)


class Slot:
    """One sequence of the context: the tokens its cells hold and the reply it is making."""

    def __init__(self, seq: int):
        self.seq = seq
        self.tokens: list[int] = []  # evaluated into this sequence's KV cells, in order
        self.used = 0.0  # when its last reply ended: the least recently used slot goes first
        self.request: Request | None = None
        self.pending: list[int] = []  # prompt tokens still to evaluate
        self.next_token: int | None = None  # sampled, to be evaluated in the next step
        self.sampler: Sampler | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.cached = self.sampled = self.completion = 0
        self.first: float | None = None
        self.last = 0.0

    def holds(self, tokens: list[int]) -> int:
        """How many leading tokens of `tokens` the cells hold."""
        return common_prefix(np.asarray(self.tokens, np.int32), np.asarray(tokens, np.int32))

    def begin(self, request: Request, cached: int) -> None:
        self.request, self.cached = request, cached
        self.pending = request.tokens[cached:]
        self.sampler = make_sampler(request.options)
        self.decoder.reset()
        self.sampled = self.completion = 0
        self.first, self.last = None, request.start

    def end(self) -> None:
        if self.sampler is not None:
            llama_cpp.llama_sampler_free(self.sampler)
        self.request = self.sampler = self.next_token = None
        self.pending = []
        self.used = time.perf_counter()


def best_slot(free: list[Slot], tokens: list[int]) -> Slot:
    """The free slot whose conversation this prompt continues; else the least recently used.

    Continues: shares at least half of what the slot holds. A prefix that every prompt
    shares (the template, a system prompt) does not take a returning customer's slot.
    """

    def held(slot: Slot) -> int:
        common = slot.holds(tokens)
        return common if common >= max(MIN_REUSE, len(slot.tokens) // 2) else 0

    best = max(free, key=held)
    return best if held(best) else min(free, key=lambda slot: slot.used)
