"""Saved KV state per conversation, so a returning customer's history is not evaluated again.

A sequence's KV cells (`llama_state_seq_get_data`) are kept under the tokens they hold: in
memory up to a byte bound (least recently used out first), spilled to the cache folder (`kv/`,
a bound of its own) when evicted or when the process ends, where a later process (`chatbot ask
--conversation`) or another context finds them. A
new prompt reuses the entry with the longest common token prefix, within one model file, so a
history that changed reuses only what still agrees. llama-cpp-python's LlamaRAMCache and
LlamaDiskCache save the whole context (every sequence, plus its logits) keyed by tokens alone,
which fits neither a context shared by several customers nor a replaced model file.
"""

import contextlib
import ctypes
import hashlib
import mmap
import os
import queue
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from chatbot.engines.offload import OffloadSettings
from converter.files import atomic_write_bytes
from converter.paths import cache_dir

KV_ENV = "CHATBOT_KV_DIR"
RAM_BYTES = 256 * 2**20  # SmolLM2 holds 23 KB a token: about 11,000 tokens of conversations
DISK_BYTES = 2 * 2**30
MIN_TOKENS = 16  # a shorter prefix is cheaper to evaluate than to copy back
_MAGIC = b"CBKVSEQ1"
_HEADER = struct.Struct("<8sIII")  # magic, model key length, token count, prompt length


def open_cache(model_path: Path, offload: OffloadSettings | None = None) -> "KVCache":
    """The default cache of a model, as an engine with these settings lays out its KV cells.

    Flash attention changes the V layout (llama.cpp refuses such a state): its own files.
    """
    return KVCache(model_path, variant=f"flash_attn={bool(offload and offload.flash_attn)}")


def default_folder() -> Path:
    """$CHATBOT_KV_DIR, else the KV folder inside the cache folder (CHATBOT_CACHE_DIR or the
    user cache): tests keep their states apart from the user's without moving the models."""
    override = os.environ.get(KV_ENV)
    return Path(override) if override else cache_dir() / "kv"


def model_key(model_path: Path, variant: str = "") -> str:
    """Names one model file as it is now, and the llama.cpp build and context layout reading it.

    A file replaced under the same name has another size or mtime, so its states are not reused.
    """
    stat = Path(model_path).stat()
    ident = f"{Path(model_path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    ident += f"\0{llama_cpp.__version__}\0{variant}"
    return hashlib.sha256(ident.encode()).hexdigest()


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two token arrays share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


@dataclass(frozen=True)
class SavedState:
    """One sequence's KV cells and the tokens they hold."""

    tokens: np.ndarray  # int32, the tokens evaluated into the cells
    prompt_len: int  # tokens of the prompt; the rest were the reply generated after it
    data: bytes | bytearray | memoryview  # llama_state_seq_get_data's bytes (or a mapped file)


@dataclass(frozen=True)
class CacheHit:
    """A saved state and how many tokens of the new prompt it covers."""

    common: int
    state: SavedState


@dataclass
class _DiskEntry:
    tokens: np.ndarray
    size: int
    mtime: float


class KVCache:
    """Saved sequence states of one model: a bounded LRU in memory, spilled to disk.

    A state is written when memory evicts it and at `close` (a process that ends, such as
    `chatbot ask`, leaves its states for the next), not on every reply: a busy server would
    otherwise write megabytes a turn. Thread-safe: the engine's threads look up and store; one
    writer thread does the disk writes, so no decoding waits on a file.
    """

    def __init__(
        self,
        model_path: Path,
        folder: Path | None = None,  # the kv/ folder; the disk bound covers all of it
        *,
        variant: str = "",
        ram_bytes: int = RAM_BYTES,
        disk_bytes: int = DISK_BYTES,
        min_tokens: int = MIN_TOKENS,
    ):
        self.key = model_key(model_path, variant)
        self.root = folder if folder is not None else default_folder()
        self.folder = self.root / self.key[:16]  # one folder per model file
        self.ram_bytes, self.disk_bytes, self.min_tokens = ram_bytes, disk_bytes, min_tokens
        self._ram: OrderedDict[bytes, SavedState] = OrderedDict()
        self._ram_used = 0
        self._on_disk: set[bytes] = set()  # states in memory that a file holds too
        self._pending: dict[bytes, SavedState] = {}  # handed to the writer, not yet written
        self._disk: dict[str, _DiskEntry] = {}
        self._lock = threading.Lock()
        self._writes: queue.Queue[SavedState | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def lookup(self, tokens: list[int]) -> CacheHit | None:
        """The saved state sharing the longest prefix with `tokens`, at most all but the last.

        The last prompt token is always evaluated again: its logits start the reply.
        """
        want = np.asarray(tokens, dtype=np.int32)
        limit = len(want) - 1
        best: CacheHit | None = None
        with self._lock:
            for name, state in [*self._ram.items(), *self._pending.items()]:
                common = min(common_prefix(state.tokens, want), limit)
                if common >= self.min_tokens and (best is None or common > best.common):
                    best, best_name = CacheHit(common, state), name
            if best is not None and best_name in self._ram:
                self._ram.move_to_end(best_name)
        disk = self._disk_lookup(want, limit, best.common if best else self.min_tokens - 1)
        return disk or best

    def store(self, tokens: list[int], prompt_len: int, data: bytes | bytearray) -> None:
        """Keep a sequence's state in memory; entries whose tokens all begin it are dropped.

        It reaches the disk when memory evicts it, or at `flush` and `close`.
        """
        if len(tokens) < self.min_tokens or not data:
            return
        state = SavedState(np.asarray(tokens, dtype=np.int32), prompt_len, data)
        self._spill(self._remember(state, on_disk=False))

    def flush(self) -> None:
        """Write every state that only memory holds to disk, and wait until it is written."""
        with self._lock:
            spill = [state for name, state in self._ram.items() if name not in self._on_disk]
            self._on_disk.update(self._ram)
        self._spill(spill)
        if self._writer is not None:
            self._writes.join()

    def close(self) -> None:
        """Write what only memory holds, then stop the writer thread."""
        self.flush()
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None

    def _remember(self, state: SavedState, on_disk: bool) -> list[SavedState]:
        """Into the memory LRU; the least recently used go past the byte bound, and those of
        them that only memory held are returned, to be written to disk."""
        name = state.tokens.tobytes()
        spill = []
        with self._lock:
            for old_name, old in list(self._ram.items()):
                if common_prefix(old.tokens, state.tokens) == len(old.tokens):
                    self._forget(old_name)
            if len(state.data) > self.ram_bytes:
                return [] if on_disk else [state]
            self._ram[name] = state
            self._ram_used += len(state.data)
            if on_disk:
                self._on_disk.add(name)
            while self._ram_used > self.ram_bytes:
                oldest = next(iter(self._ram))
                evicted = self._ram[oldest]
                if oldest not in self._on_disk:
                    spill.append(evicted)
                self._forget(oldest)
        return spill

    def _forget(self, name: bytes) -> None:
        self._ram_used -= len(self._ram.pop(name).data)
        self._on_disk.discard(name)

    def _spill(self, states: list[SavedState]) -> None:
        """Hand states to the writer thread; until written, lookups still find them."""
        if not states:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="kv-writer", daemon=True)
            self._writer.start()
        with self._lock:
            for state in states:
                self._pending[state.tokens.tobytes()] = state
        for state in states:
            self._writes.put(state)

    # -- disk ------------------------------------------------------------------------------

    def _file(self, tokens: np.ndarray) -> Path:
        digest = hashlib.sha256(self.key.encode() + tokens.tobytes()).hexdigest()
        return self.folder / f"{digest[:40]}.kv"

    def _disk_lookup(self, want: np.ndarray, limit: int, beat: int) -> CacheHit | None:
        """A state from disk covering more than `beat` tokens, read and kept in memory too."""
        with self._lock:
            self._scan()
            ranked = sorted(
                ((min(common_prefix(e.tokens, want), limit), n) for n, e in self._disk.items()),
                reverse=True,
            )
        for common, name in ranked:
            if common <= beat:
                break
            state = self._read(self.folder / name)
            if state is not None:
                with contextlib.suppress(OSError):
                    os.utime(self.folder / name)  # most recently used: evicted last
                self._spill(self._remember(state, on_disk=True))
                return CacheHit(common, state)
        return None

    def _scan(self) -> None:
        """Bring the index of the folder up to date (another process may have written)."""
        try:
            found = {e.name: e.stat() for e in os.scandir(self.folder) if e.name.endswith(".kv")}
        except FileNotFoundError:
            found = {}
        for name in set(self._disk) - set(found):
            del self._disk[name]
        for name, stat in found.items():
            known = self._disk.get(name)
            if known is not None:
                known.mtime = stat.st_mtime
                continue
            tokens = self._read_tokens(self.folder / name)
            if tokens is not None:
                self._disk[name] = _DiskEntry(tokens, stat.st_size, stat.st_mtime)

    def _read_header(self, handle) -> tuple[np.ndarray, int] | None:
        head = handle.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return None
        magic, key_len, n_tokens, prompt_len = _HEADER.unpack(head)
        if magic != _MAGIC or handle.read(key_len) != self.key.encode():
            return None
        raw = handle.read(4 * n_tokens)
        if len(raw) != 4 * n_tokens:
            return None
        return np.frombuffer(raw, dtype=np.int32), prompt_len

    def _read_tokens(self, path: Path) -> np.ndarray | None:
        try:
            with path.open("rb") as handle:
                header = self._read_header(handle)
        except OSError:
            return None
        return header[0] if header else None

    def _read(self, path: Path) -> SavedState | None:
        """A state from its file, mapped rather than copied: the restore reads the page cache."""
        try:
            with path.open("rb") as handle:
                header = self._read_header(handle)
                if header is None:
                    return None
                offset = handle.tell()
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):  # evicted by another process meanwhile, or empty
            return None
        data = memoryview(mapped)[offset:]  # valid even if the file is deleted now
        return SavedState(header[0], header[1], data) if len(data) else None

    def _write_loop(self) -> None:
        while True:
            state = self._writes.get()
            try:
                if state is None:
                    return
                self._write(state)
            except OSError:
                pass  # a full or read-only disk costs reuse, never a reply
            finally:
                if state is not None:
                    with self._lock:
                        self._pending.pop(state.tokens.tobytes(), None)
                self._writes.task_done()

    def _write(self, state: SavedState) -> None:
        """One state as a user-only file, replaced atomically; then the disk bound enforced."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.key.encode()
        header = _HEADER.pack(_MAGIC, len(key), len(state.tokens), state.prompt_len)
        path = self._file(state.tokens)
        atomic_write_bytes(path, b"".join([header, key, state.tokens.tobytes(), state.data]))
        with self._lock:
            self._scan()
            for name, entry in list(self._disk.items()):
                superseded = common_prefix(entry.tokens, state.tokens) == len(entry.tokens)
                if superseded and name != path.name:
                    self._unlink(name)
        self._evict_disk()

    def _evict_disk(self) -> None:
        """Least recently used files out until the whole kv/ folder (every model) fits."""
        files = []
        for folder in os.scandir(self.root):
            if folder.is_dir(follow_symlinks=False):
                for entry in os.scandir(folder.path):
                    if entry.name.endswith(".kv"):
                        stat = entry.stat()
                        files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        used = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if used <= self.disk_bytes:
                break
            used -= size
            with contextlib.suppress(OSError):
                path.unlink()
            with self._lock:
                if path.parent == self.folder:
                    self._disk.pop(path.name, None)

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(OSError):
            (self.folder / name).unlink()
        self._disk.pop(name, None)


# -- llama.cpp sequences ---------------------------------------------------------------------


def read_sequence(ctx: llama_cpp.llama_context_p, seq_id: int) -> bytearray:
    """The KV cells of one sequence as bytes (`llama_state_seq_get_data`)."""
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    data = bytearray(size)
    if size:
        view = (ctypes.c_uint8 * size).from_buffer(data)
        size = llama_cpp.llama_state_seq_get_data(ctx, view, size, seq_id)
        del view  # release the export so the bytearray can be resized
        del data[size:]
    return data


def write_sequence(ctx: llama_cpp.llama_context_p, seq_id: int, hit: CacheHit) -> bool:
    """Load a saved state into an emptied sequence and keep its first `hit.common` tokens."""
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(memory, seq_id, 0, -1)
    data = hit.state.data
    array = ctypes.c_uint8 * len(data)
    try:
        src = array.from_buffer(data)  # a bytearray or a mapped file: no copy
    except TypeError:  # read-only bytes
        src = array.from_buffer_copy(data)
    loaded = llama_cpp.llama_state_seq_set_data(ctx, src, len(data), seq_id)
    del src  # release the bytearray's export
    if loaded == 0:
        llama_cpp.llama_memory_seq_rm(memory, seq_id, 0, -1)
        return False
    llama_cpp.llama_memory_seq_rm(memory, seq_id, hit.common, -1)
    return True


def restore_llama(llm: llama_cpp.Llama, cache: KVCache, tokens: list[int], cached: int) -> int:
    """Before `Llama.generate`: load the saved state that covers more of the prompt than the
    context already holds (`cached` tokens); returns the prompt tokens now reused."""
    hit = cache.lookup(tokens)
    if hit is None or hit.common < cached + cache.min_tokens:
        return cached
    if not write_sequence(llm._ctx.ctx, 0, hit):  # noqa: SLF001 (the live context)
        llm.n_tokens = 0  # the sequence was emptied: evaluate everything
        return 0
    llm.input_ids[: hit.common] = hit.state.tokens[: hit.common]
    llm.n_tokens = hit.common
    llm._requires_eval = True  # noqa: SLF001 (no logits yet: decode before sampling)
    return hit.common


def save_llama(llm: llama_cpp.Llama, cache: KVCache, prompt_len: int) -> None:
    """After a reply: keep the evaluated tokens' state (prompt and reply) for the next turn."""
    n = llm.n_tokens
    cache.store(llm.input_ids[:n].tolist(), prompt_len, read_sequence(llm._ctx.ctx, 0))  # noqa: SLF001
