"""Perplexity and decode speed, measured the way llama.cpp's `llama-perplexity` measures them.

The text is tokenized once (by the GGUF's own tokenizer) and cut into `ctx`-token windows; only the
second half of each window is scored, so every scored token sees at least ctx/2 tokens of context.
The same windows go through llama.cpp and, for reference, through transformers in float32, which
makes the two numbers directly comparable. torch and transformers are imported only inside the
Hugging Face functions: `converter eval` on a GGUF never loads them.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from converter.errors import ConverterError
from converter.paths import PROJECT_DATA

# llama-perplexity's default window: scores compare with llama.cpp's own tool. Not the chat
# context (converter.gguf_keys.CHAT_CTX), which sizes the KV cache a conversation runs in.
PERPLEXITY_CTX = 512
DEFAULT_EVAL_TEXT = PROJECT_DATA / "eval" / "heldout.txt"

LogitsFn = Callable[[Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of an evaluation text; `bos_id` is set when each window must start with BOS."""

    ids: list[int]
    bos_id: int | None


@dataclass(frozen=True)
class Perplexity:
    """exp(mean negative log-likelihood) over the scored tokens of every full window."""

    value: float
    n_scored: int
    n_windows: int
    ctx: int


@dataclass(frozen=True)
class EvalResult:
    """What `converter eval` reports for one GGUF file."""

    path: str
    file_bytes: int
    perplexity: Perplexity
    tokens_per_s: float
    n_threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def n_threads() -> int:
    """Every core this process may run on (llama-cpp-python defaults to half of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tokenize_gguf(gguf_path: Path, text: str) -> TokenizedText:
    """Tokenize with the GGUF's own vocabulary (no weights loaded), as llama-perplexity does."""
    llm = _load(gguf_path, vocab_only=True)
    try:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        bos = llm.token_bos() if llm._model.add_bos_token() else None
    finally:
        llm.close()
    return TokenizedText(ids=list(ids), bos_id=bos)


def token_windows(tokens: TokenizedText, ctx: int) -> list[list[int]]:
    """Consecutive full `ctx`-token windows; the first token becomes BOS when the model uses it."""
    if ctx < 4:
        raise ConverterError(f"context {ctx} is too small for perplexity; use at least 4 tokens")
    n = len(tokens.ids) // ctx
    if n == 0:
        raise ConverterError(
            f"the evaluation text has {len(tokens.ids)} tokens; perplexity with a {ctx}-token "
            f"context needs at least {ctx}: give a longer text"
        )
    windows = [tokens.ids[i * ctx : (i + 1) * ctx] for i in range(n)]
    if tokens.bos_id is not None:
        for window in windows:
            window[0] = tokens.bos_id
    return windows


def perplexity(logits_fn: LogitsFn, tokens: TokenizedText, ctx: int) -> Perplexity:
    """Score the second half of every window with `logits_fn` (ids -> [len(ids), vocab] logits)."""
    first = ctx // 2
    total_nll, count = 0.0, 0
    windows = token_windows(tokens, ctx)
    for i, window in enumerate(windows):
        logits = logits_fn(window)[first : ctx - 1].astype(np.float64)
        targets = np.asarray(tokens.ids[i * ctx + first + 1 : (i + 1) * ctx])
        peak = logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
        total_nll += float((log_z - logits[np.arange(len(targets)), targets]).sum())
        count += len(targets)
    return Perplexity(
        value=float(np.exp(total_nll / count)), n_scored=count, n_windows=len(windows), ctx=ctx
    )


class GgufLogits:
    """A llama.cpp instance that returns every position's logits (its own, never the chat one)."""

    def __init__(self, gguf_path: Path, ctx: int = PERPLEXITY_CTX):
        self.llm = _load(gguf_path, n_ctx=ctx, n_batch=ctx, logits_all=True)
        self.ctx_train = self.llm._model.n_ctx_train()

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def close(self) -> None:
        self.llm.close()


def gguf_perplexity(
    gguf_path: Path, tokens: TokenizedText, ctx: int = PERPLEXITY_CTX
) -> Perplexity:
    """Perplexity of a GGUF through llama.cpp; ctx is capped at the model's training context."""
    probe = GgufLogits(gguf_path, ctx)
    try:
        if probe.ctx_train and probe.ctx_train < ctx:
            probe.close()
            ctx = probe.ctx_train
            probe = GgufLogits(gguf_path, ctx)
        return perplexity(probe, tokens, ctx)
    finally:
        probe.close()


def hf_logits_fn(checkpoint: Path) -> LogitsFn:
    """A float32 transformers model as a logits function (imports torch only when called)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(n_threads())
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()

    def logits(ids: Sequence[int]) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.tensor([list(ids)], dtype=torch.long)).logits[0]
        return out.float().numpy()

    return logits


def hf_perplexity(checkpoint: Path, tokens: TokenizedText, ctx: int = PERPLEXITY_CTX) -> Perplexity:
    """Perplexity of a Hugging Face checkpoint on the same token windows as `gguf_perplexity`."""
    return perplexity(hf_logits_fn(checkpoint), tokens, ctx)


def decode_speed(gguf_path: Path, n_tokens: int = 128) -> float:
    """Greedy decoding speed in tokens/s after a short prompt, on every core."""
    import llama_cpp

    prompt_text = "The quickest way to learn something new is"
    llm = _load(gguf_path, n_ctx=n_tokens + 64, logits_all=False)
    try:
        prompt = llm.tokenize(prompt_text.encode("utf-8"), add_bos=llm._model.add_bos_token())
        llm.eval(prompt)
        n_vocab = llm.n_vocab()
        start = time.perf_counter()
        for _ in range(n_tokens):
            row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            llm.eval([int(np.ctypeslib.as_array(row, shape=(n_vocab,)).argmax())])
        elapsed = time.perf_counter() - start
    finally:
        llm.close()
    return n_tokens / elapsed


def evaluate(
    gguf_path: Path, text: str, ctx: int = PERPLEXITY_CTX, speed_tokens: int = 128
) -> EvalResult:
    """Perplexity on `text` and decode speed of one GGUF: what `converter eval` reports."""
    tokens = tokenize_gguf(gguf_path, text)
    return EvalResult(
        path=str(gguf_path),
        file_bytes=gguf_path.stat().st_size,
        perplexity=gguf_perplexity(gguf_path, tokens, ctx),
        tokens_per_s=decode_speed(gguf_path, speed_tokens),
        n_threads=n_threads(),
    )


def _load(gguf_path: Path, **kwargs):
    """A quiet llama.cpp instance on every core; a clear error when the file will not load."""
    import llama_cpp

    from converter import llama_log

    if not Path(gguf_path).is_file():
        raise ConverterError(f"{gguf_path} does not exist: give the path of a .gguf file")
    llama_log.install()
    threads = n_threads()
    try:
        return llama_cpp.Llama(
            model_path=str(gguf_path),
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            **kwargs,
        )
    except ValueError as exc:  # llama-cpp-python's way of saying the file did not load
        raise ConverterError(
            f"llama.cpp could not load {gguf_path} ({exc}); is it a complete GGUF file?"
        ) from exc
