"""The embedded engine: one llama.cpp model in this process, loaded once, KV cache kept warm.

Each turn renders the whole conversation with the GGUF's own chat template and tokenizes it;
`Llama.generate` then evaluates only the tokens after the longest prefix already in the
context, so a growing conversation costs its new tokens, not its length. llama.cpp's log goes
to Python logging (logger "llama.cpp", converter.llama_log), never to the terminal a TUI draws on.
"""

import codecs
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import jinja2
import llama_cpp

from chatbot.engines.base import (
    ChatMessage,
    EngineInfo,
    GenerationOptions,
    GenerationStats,
    TextChunk,
    room_for_reply,
    token_timing,
)
from chatbot.engines.kv_cache import KVCache, restore_llama, save_llama
from chatbot.engines.offload import OffloadSettings
from chatbot.engines.prompt import (
    PromptTokenizer,
    broken_template,
    chat_formatter,
    special_token_texts,
)
from chatbot.engines.threads import ThreadTuner, Tuning, start_threads
from chatbot.errors import EngineError, ModelLoadError
from converter import llama_log
from converter.gguf_keys import CHAT_CTX, file_type_name

log = logging.getLogger("chatbot.llama")

GGUF_MAGIC = b"GGUF"
N_BATCH = 512  # prompt tokens evaluated per llama_decode call
# Used only when a GGUF carries no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def check_model_file(path: Path) -> Path:
    """The path as a readable GGUF file, or ModelLoadError saying what is wrong and what to do."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model file {path} not found; pass --model with a .gguf file "
            "(`converter` builds one from a Hugging Face model)"
        )
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a model file; pass the .gguf file itself")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF model file (it does not start with the GGUF magic bytes); "
            "convert the model with `converter` first"
        )
    return path


def quantization_name(metadata: dict[str, str]) -> str:
    """The GGUF's `general.file_type` as llama.cpp names it (e.g. 15 -> "Q4_K_M")."""
    value = metadata.get("general.file_type")
    if value is None or not str(value).isdigit():
        return "unknown"
    return file_type_name(int(value))


def load_llama(path: Path, **params: object) -> llama_cpp.Llama:
    """`llama_cpp.Llama(path, **params)`, its load-time output sent to logging, or ModelLoadError.

    verbose=False would dup2 fds 1 and 2 to /dev/null while loading, blanking a running TUI;
    verbose=True with its Python prints redirected keeps the terminal untouched. The returned
    model has verbose switched off again: no prints per call either.
    """
    errors = llama_log.ErrorLines()
    try:
        with (
            llama_log.listen(errors),
            contextlib.redirect_stderr(llama_log.PrintsToLog()),
            contextlib.redirect_stdout(llama_log.PrintsToLog()),
        ):
            llm = llama_cpp.Llama(model_path=str(path), verbose=True, **params)
    except jinja2.TemplateError as exc:  # llama-cpp-python compiles every template it finds
        raise broken_template(exc) from exc
    except (ValueError, RuntimeError, OSError) as exc:
        why = errors.first or str(exc)
        raise ModelLoadError(
            f"llama.cpp cannot load {path} ({why}); the file may be truncated or of an "
            "unsupported architecture: convert it again with `converter`"
        ) from exc
    llm.verbose = False
    return llm


def _load_chat_model(
    path: Path, n_ctx: int, threads: int, offload: OffloadSettings | None
) -> llama_cpp.Llama:
    """The chat model with this context size, thread count and GPU offload plan."""
    return load_llama(
        path,
        n_ctx=n_ctx,
        n_batch=min(N_BATCH, n_ctx),
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=offload.n_gpu_layers if offload else 0,
        flash_attn=offload.flash_attn if offload else False,
        offload_kqv=offload.offload_kqv if offload else True,
    )


class LlamaEngine:
    """Engine over one `llama_cpp.Llama`; generation is serialized (one context, one cache)."""

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = CHAT_CTX,
        n_threads: int | None = None,
        *,
        offload: OffloadSettings | None = None,
        tuning: Tuning | None = None,
        kv_cache: KVCache | None = None,
    ):
        """Load the model; `offload` is the GGUF's plan with flags applied (CPU only when None).

        With `kv_cache`, each reply's KV state is saved and a turn whose history is not in the
        context (another conversation ran, or a new process) loads it back (engines.kv_cache).
        """
        path = check_model_file(Path(model_path))
        # No --threads: start from the cores idle now and keep adapting (chatbot.engines.threads).
        tuning = tuning or Tuning()
        threads = n_threads or start_threads(tuning)
        self.path = path
        self.kv_cache = kv_cache
        self._lock = threading.Lock()
        self.llm = _load_chat_model(path, n_ctx, threads, offload)
        self.tuner = ThreadTuner(self.llm.ctx, threads, fixed=bool(n_threads), tuning=tuning)
        metadata = self.llm.metadata
        self._prompt = self._prompt_tokenizer(metadata)
        self._vocab = self.llm._model.vocab  # noqa: SLF001 (EOG test and pieces need the vocab)
        self._buf = ctypes.create_string_buffer(64)
        self._last_tokens: tuple[tuple, tuple[int, ...]] | None = None  # see tokens()
        self.info = EngineInfo(
            model=path.name,
            quantization=quantization_name(metadata),
            n_ctx=self.llm.n_ctx(),
            threads=threads,
            backend=f"llama.cpp ({offload.description if offload else 'CPU'})",
            settings=offload.as_dict() if offload else {"n_gpu_layers": 0, "flash_attn": False},
        )

    def _prompt_tokenizer(self, metadata: dict[str, str]) -> PromptTokenizer:
        llm = self.llm
        model = llm._model  # noqa: SLF001 (token texts and the vocab)
        bos, eos = llm.token_bos(), llm.token_eos()
        formatter = chat_formatter(
            metadata.get("tokenizer.chat_template", CHATML_TEMPLATE),
            bos=model.token_get_text(bos) if bos != -1 else "",
            eos=model.token_get_text(eos) if eos != -1 else "",
        )
        specials = special_token_texts(model.vocab, llm.n_vocab())
        return PromptTokenizer(formatter, specials, llm.tokenize)

    def tokens(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt tokens: the chat template's markers as control tokens, text as text.

        The last result is kept: a turn counts its prompt to fit the context, then streams that
        same prompt, so it is rendered and tokenized once, not twice.
        """
        key = tuple(tuple(message.items()) for message in messages)
        last = self._last_tokens
        if last is not None and last[0] == key:
            return list(last[1])
        tokens = self._prompt(messages)
        self._last_tokens = (key, tuple(tokens))
        return tokens

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.tokens(messages))

    def cached_prefix(self, tokens: list[int]) -> int:
        """Prompt tokens `Llama.generate` will reuse from the KV cache (its own rule)."""
        llm = self.llm
        common = llama_cpp.Llama.longest_token_prefix(
            llm.input_ids[: llm.n_tokens].tolist(), tokens
        )
        if common == len(tokens):
            exact = llm.n_tokens == len(tokens) and not llm._requires_eval  # noqa: SLF001
            return common if exact else common - 1
        return common

    def stream(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[TextChunk | GenerationStats]:
        tokens = self.tokens(messages)
        room = room_for_reply(len(tokens), self.info.n_ctx)
        with self._lock:
            try:
                yield from self._generate(
                    tokens, min(options.max_tokens, room), options, should_stop
                )
            except RuntimeError as exc:  # llama_decode failed: the cache state is unknown
                self.llm.reset()
                raise EngineError(f"llama.cpp failed while generating: {exc}") from exc

    def _generate(
        self,
        tokens: list[int],
        max_new: int,
        options: GenerationOptions,
        should_stop: Callable[[], bool],
    ) -> Iterator[TextChunk | GenerationStats]:
        llm = self.llm
        start = time.perf_counter()  # time to first token counts loading a saved state too
        cached = self.cached_prefix(tokens)
        if self.kv_cache is not None:
            cached = restore_llama(llm, self.kv_cache, tokens, cached)
        llm.set_seed(options.seed if options.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        first = last = start
        sampled = completion = 0
        reason = "length"
        if should_stop():
            reason, max_new = "cancelled", 0
        generator = self.tuner.timed(
            llm.generate(tokens, temp=options.temperature, top_p=options.top_p),
            prompt_tokens=len(tokens) - max(cached, 0),
        )
        for token in generator if max_new else ():
            last = time.perf_counter()
            sampled += 1
            if sampled == 1:
                first = last
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                reason = "stop"
                break
            completion += 1
            text = decoder.decode(self._piece(token))
            if text:
                yield TextChunk(text)
            if should_stop():
                reason = "cancelled"
                break
            if completion >= max_new:
                break
        generator.close()
        if self.kv_cache is not None and sampled:
            save_llama(llm, self.kv_cache, len(tokens))
        tail = decoder.decode(b"", final=True)
        if tail:
            yield TextChunk(tail)
        # info.threads: the count used for most of this reply's tokens (the turn's record).
        self.info = replace(self.info, threads=self.tuner.turn_threads())
        ttft_ms, decode_tps = token_timing(start, first if sampled else None, last, sampled)
        yield GenerationStats(
            prompt_tokens=len(tokens),
            cached_tokens=max(cached, 0),
            completion_tokens=completion,
            ttft_ms=ttft_ms,
            decode_tps=decode_tps,
            total_ms=(time.perf_counter() - start) * 1000,
            stop_reason=reason,
        )

    def _piece(self, token: int) -> bytes:
        """The bytes of one generated token (special tokens rendered as nothing)."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # a piece longer than the buffer: grow it once and retry
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buf, -n, 0, False)
        return self._buf.raw[:n]

    def close(self) -> None:
        with self._lock:
            self.llm.close()
        if self.kv_cache is not None:
            self.kv_cache.close()  # the states still being written reach the disk
