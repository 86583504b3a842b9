"""GPU offload plan: how much of a GGUF fits on a card of a given size, from its own tensor table.

Placement follows llama.cpp (src/llama-model.cpp, load_tensors): token embeddings always stay on
the CPU; `n_gpu_layers` counts the repeating blocks plus the output layer as one more, offloaded
from the end (n_gpu_layers=1 puts only the output layer on the GPU, n_layer+1 puts everything);
with tied embeddings the output device gets its own copy of token_embd. With `offload_kqv` each
offloaded block keeps its KV cache on the GPU. llama.cpp pads the context to a multiple of 256.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from converter.errors import ConverterError, OutputError, SourceError
from converter.files import atomic_output
from converter.gguf_keys import (
    CHAT_CTX,
    KEY_FLASH_ATTN,
    KEY_GPU_MEMORY,
    KEY_N_CTX,
    KEY_N_GPU_LAYERS,
    KEY_OFFLOAD_KQV,
)
from converter.info import field_value, open_gguf
from converter.options import check_ctx

CTX_PAD = 256  # llama_context pads n_ctx to this
N_UBATCH = 512  # llama-cpp-python's default physical batch: sizes the compute buffer
KV_ELEMENT_BYTES = 2  # F16 K and V, llama.cpp's default cache type
F32_BYTES = 4
# Kept free on the card: CUDA context and cuBLAS workspace (fixed) plus fragmentation (share).
RESERVED_BYTES = 256 * 2**20
RESERVED_SHARE = 0.05

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def parse_size(text: str) -> int:
    """Bytes from '8GiB', '8G', '512MiB', '1.5GB' or a byte count; units are powers of 1024."""
    match = _SIZE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConverterError(f"cannot read memory size {text!r}; write it like 8GiB, 512MiB or 8G")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def format_bytes(n: int) -> str:
    """Bytes as MiB or GiB, the units llama.cpp's own log uses."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


@dataclass(frozen=True)
class ModelFigures:
    """What the plan needs from a GGUF: bytes per block and layer, and the attention shape."""

    name: str
    n_layer: int
    block_bytes: tuple[int, ...]
    output_bytes: int  # output norm + output matrix (token_embd's copy when tied)
    token_embd_bytes: int
    weights_bytes: int  # every tensor once: what a CPU-only load maps
    kv_heads: tuple[int, ...]  # KV heads per block (0 for a block without attention)
    head_dim_k: int
    head_dim_v: int
    n_head: int  # largest query head count of any block
    n_embd: int
    n_ff: int  # largest FFN width of any block
    n_vocab: int

    def kv_bytes(self, n_ctx: int, flash_attn: bool, blocks: range | None = None) -> int:
        """F16 K and V cache bytes at a context of `n_ctx` tokens, as llama.cpp sizes them.

        The context is padded to CTX_PAD cells. Without flash attention V is stored transposed,
        and when blocks differ in KV width every block's V is padded to the widest.
        """
        cells = -(-n_ctx // CTX_PAD) * CTX_PAD
        heads = self.kv_heads if blocks is None else [self.kv_heads[i] for i in blocks]
        v_heads = [max(self.kv_heads)] * len(heads) if not flash_attn else heads
        per_cell = sum(heads) * self.head_dim_k + sum(v_heads) * self.head_dim_v
        return cells * per_cell * KV_ELEMENT_BYTES

    def compute_bytes(self, n_ctx: int, flash_attn: bool) -> int:
        """Estimated compute buffer: the largest stage of a worst-case batch.

        llama.cpp reserves it for one batch of min(N_UBATCH, n_ctx) tokens and reuses memory
        between ops, so the peak is one stage plus the hidden states alive beside it: the output
        (logits), attention (scores and mask, no scores with flash attention) or the FFN.
        Fitted to llama.cpp's reports on SmolLM2: 98.25 MiB at 512 tokens, 166.4 MiB at 8192.
        """
        cells = -(-n_ctx // CTX_PAD) * CTX_PAD
        ubatch = min(N_UBATCH, n_ctx)
        hidden = ubatch * self.n_embd * F32_BYTES
        logits = ubatch * self.n_vocab * F32_BYTES + 2 * hidden
        scores = 0 if flash_attn else self.n_head * cells * ubatch * F32_BYTES
        mask = cells * ubatch * (KV_ELEMENT_BYTES if flash_attn else F32_BYTES)  # F16 with FA
        attention = scores + mask + 6 * hidden
        ffn = 3 * ubatch * self.n_ff * F32_BYTES + 2 * hidden
        return max(logits, attention, ffn)


@dataclass(frozen=True)
class OffloadPlan:
    """The settings chosen for one card and context, with the byte figures behind them."""

    model: ModelFigures
    gpu_memory: int
    usable_bytes: int  # gpu_memory less the reserve
    n_ctx: int
    n_gpu_layers: int  # llama.cpp's meaning: blocks + output layer, counted from the end
    offload_kqv: bool
    flash_attn: bool
    kv_bytes: int  # whole KV cache at n_ctx, wherever it lives
    compute_bytes: int
    gpu_bytes: int  # estimated use of the card with these settings

    @property
    def total_layers(self) -> int:
        return self.model.n_layer + 1

    @property
    def summary(self) -> str:
        if self.n_gpu_layers == 0:
            return "nothing fits: run on the CPU (n_gpu_layers 0)"
        return (
            f"{self.n_gpu_layers}/{self.total_layers} layers on the GPU, "
            f"KV cache on the {'GPU' if self.offload_kqv else 'CPU'}, "
            f"flash attention {'on' if self.flash_attn else 'off'}"
        )

    def metadata(self) -> dict[str, tuple[object, gguf.GGUFValueType]]:
        """The plan as GGUF key-values in this project's namespace."""
        t = gguf.GGUFValueType
        return {
            KEY_N_GPU_LAYERS: (self.n_gpu_layers, t.INT32),
            KEY_OFFLOAD_KQV: (self.offload_kqv, t.BOOL),
            KEY_FLASH_ATTN: (self.flash_attn, t.BOOL),
            KEY_N_CTX: (self.n_ctx, t.UINT32),
            KEY_GPU_MEMORY: (self.gpu_memory, t.UINT64),
        }

    def to_dict(self) -> dict[str, object]:
        """For the conversion report's JSON."""
        m = self.model
        return {
            "gpu_memory": self.gpu_memory,
            "usable_bytes": self.usable_bytes,
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "total_layers": self.total_layers,
            "offload_kqv": self.offload_kqv,
            "flash_attn": self.flash_attn,
            "block_bytes": list(m.block_bytes),
            "output_bytes": m.output_bytes,
            "token_embd_bytes": m.token_embd_bytes,
            "weights_bytes": m.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "gpu_bytes": self.gpu_bytes,
        }


def read_figures(path: Path) -> ModelFigures:
    """The byte figures and attention shape of a GGUF; SourceError if it is not a readable one."""
    reader = open_gguf(path)
    arch = field_value(reader, gguf.Keys.General.ARCHITECTURE)
    n_layer = field_value(reader, f"{arch}.block_count")
    n_embd = field_value(reader, f"{arch}.embedding_length")
    if not isinstance(n_layer, int) or not isinstance(n_embd, int):
        raise SourceError(f"{path} has no {arch}.block_count / embedding_length; not a model GGUF")
    n_head = _per_layer(field_value(reader, f"{arch}.attention.head_count"), n_layer)
    kv_heads = _per_layer(field_value(reader, f"{arch}.attention.head_count_kv") or n_head, n_layer)
    head_dim = n_embd // max(max(n_head), 1)
    block_bytes = [0] * n_layer
    sizes: dict[str, int] = {}
    for tensor in reader.tensors:
        sizes[tensor.name] = int(tensor.n_bytes)
        match = _BLOCK.match(tensor.name)
        if match and int(match.group(1)) < n_layer:
            block_bytes[int(match.group(1))] += int(tensor.n_bytes)
    token_embd = sizes.get("token_embd.weight", 0)
    output = sum(v for k, v in sizes.items() if k.startswith(("output.", "output_norm.")))
    if "output.weight" not in sizes:  # tied embeddings: llama.cpp copies token_embd there
        output += token_embd
    return ModelFigures(
        name=path.name,
        n_layer=n_layer,
        block_bytes=tuple(block_bytes),
        output_bytes=output,
        token_embd_bytes=token_embd,
        weights_bytes=sum(sizes.values()),
        kv_heads=tuple(kv_heads),
        head_dim_k=field_value(reader, f"{arch}.attention.key_length") or head_dim,
        head_dim_v=field_value(reader, f"{arch}.attention.value_length") or head_dim,
        n_head=max(n_head),
        n_embd=n_embd,
        n_ff=max(_per_layer(field_value(reader, f"{arch}.feed_forward_length") or 0, n_layer)),
        n_vocab=_vocab_size(reader, arch),
    )


def gpu_bytes(
    model: ModelFigures, n_gpu_layers: int, n_ctx: int, offload_kqv: bool, flash_attn: bool
) -> int:
    """Estimated bytes on the card for these settings (0 when nothing is offloaded)."""
    if n_gpu_layers <= 0:
        return 0
    n_blocks = min(n_gpu_layers - 1, model.n_layer)
    blocks = range(model.n_layer - n_blocks, model.n_layer)
    total = model.output_bytes + sum(model.block_bytes[i] for i in blocks)
    if offload_kqv:
        total += model.kv_bytes(n_ctx, flash_attn, blocks)
    return total + model.compute_bytes(n_ctx, flash_attn)


def usable_bytes(gpu_memory: int) -> int:
    """What the plan may fill: the card less a fixed reserve and a share for fragmentation."""
    return max(0, int(gpu_memory * (1 - RESERVED_SHARE)) - RESERVED_BYTES)


def plan_offload(model: ModelFigures, gpu_memory: int, n_ctx: int = CHAT_CTX) -> OffloadPlan:
    """Offload as many layers as fit, preferring the KV cache on the GPU.

    With the KV cache on the GPU each layer costs more; if keeping it on the CPU lets more layers
    fit, that wins. Flash attention is on whenever anything is offloaded: without it the
    attention scores (heads x context x batch floats) dominate the compute buffer at long
    contexts, and llama.cpp runs it on the CPU as well as on CUDA, Metal and Vulkan.
    """
    check_ctx(n_ctx)
    budget = usable_bytes(gpu_memory)
    fitting = {kqv: _most_layers(model, budget, n_ctx, kqv) for kqv in (True, False)}
    n_gpu_layers = max(fitting.values())
    offload_kqv = n_gpu_layers > 0 and fitting[True] == n_gpu_layers
    flash_attn = n_gpu_layers > 0
    return OffloadPlan(
        model=model,
        gpu_memory=gpu_memory,
        usable_bytes=budget,
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        offload_kqv=offload_kqv,
        flash_attn=flash_attn,
        kv_bytes=model.kv_bytes(n_ctx, flash_attn),
        compute_bytes=model.compute_bytes(n_ctx, flash_attn),
        gpu_bytes=gpu_bytes(model, n_gpu_layers, n_ctx, offload_kqv, flash_attn),
    )


def _most_layers(model: ModelFigures, budget: int, n_ctx: int, offload_kqv: bool) -> int:
    for n in range(model.n_layer + 1, 0, -1):
        if gpu_bytes(model, n, n_ctx, offload_kqv, True) <= budget:
            return n
    return 0


def plan_file(path: Path, gpu_memory: int, n_ctx: int = CHAT_CTX) -> OffloadPlan:
    """The plan for a GGUF file on a card of `gpu_memory` bytes."""
    return plan_offload(read_figures(path), gpu_memory, n_ctx)


def record_plan(path: Path, gpu_memory: int, n_ctx: int = CHAT_CTX) -> OffloadPlan:
    """Plan for `path` and store it in the file's own metadata."""
    plan = plan_file(path, gpu_memory, n_ctx)
    write_plan_metadata(path, path, plan)
    return plan


def format_plan(plan: OffloadPlan) -> str:
    """A short table for people: where the bytes go and what was chosen."""
    m = plan.model
    lo, hi = min(m.block_bytes, default=0), max(m.block_bytes, default=0)
    each = format_bytes(lo) if lo == hi else f"{format_bytes(lo)} to {format_bytes(hi)}"
    rows = [
        ("token embeddings (stay on CPU)", format_bytes(m.token_embd_bytes)),
        (f"blocks: {m.n_layer}, each", each),
        ("blocks: all", format_bytes(sum(m.block_bytes))),
        ("output layer", format_bytes(m.output_bytes)),
        (f"KV cache F16 at {plan.n_ctx} tokens", format_bytes(plan.kv_bytes)),
        ("compute buffer (estimate)", format_bytes(plan.compute_bytes)),
        ("weights in the file", format_bytes(m.weights_bytes)),
        (
            "GPU memory / usable",
            f"{format_bytes(plan.gpu_memory)} / {format_bytes(plan.usable_bytes)}",
        ),
        ("on the GPU with this plan", format_bytes(plan.gpu_bytes)),
        ("n_gpu_layers", f"{plan.n_gpu_layers}/{plan.total_layers}"),
        ("offload_kqv", "yes" if plan.offload_kqv else "no"),
        ("flash_attn", "yes" if plan.flash_attn else "no"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"GPU offload plan for {m.name}: {plan.summary}"]
    lines += [f"  {label:<{width}}  {value:>18}" for label, value in rows]
    return "\n".join(lines)


def write_plan_metadata(src: Path, dst: Path, plan: OffloadPlan) -> None:
    """Copy `src` to `dst` (may be the same file) with the plan's keys added or replaced.

    Tensors are copied one at a time from the memory-mapped source; `dst` appears only when
    complete (atomic rename), so an interrupted write leaves the old file intact.
    """
    reader = open_gguf(src)
    arch = field_value(reader, gguf.Keys.General.ARCHITECTURE)
    new = plan.metadata()
    try:
        with atomic_output(dst, "offload") as temp:
            writer = gguf.GGUFWriter(temp, arch=arch, endianess=reader.endianess)
            alignment = field_value(reader, gguf.Keys.General.ALIGNMENT)
            if alignment is not None:
                writer.data_alignment = alignment
            _copy_fields(reader, writer, skip=set(new))
            for key, (value, vtype) in new.items():
                writer.add_key_value(key, value, vtype)
            for tensor in reader.tensors:
                writer.add_tensor_info(
                    tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                    tensor.tensor_type,
                )  # fmt: skip
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for tensor in reader.tensors:
                writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
            writer.close()
    except OSError as exc:
        raise OutputError(f"cannot write {dst}: {exc.strerror or exc}") from exc


def _copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, skip: set[str]) -> None:
    """Every key-value of the source except the writer's own and those being replaced."""
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in skip:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)


def _per_layer(value: object, n_layer: int) -> list[int]:
    """A hyperparameter that is one number for all blocks, or an array of one per block."""
    if isinstance(value, list):
        if len(value) != n_layer:
            raise SourceError(f"per-layer array of {len(value)} values for {n_layer} blocks")
        return [int(v) for v in value]
    return [int(value or 0)] * n_layer


def _vocab_size(reader: gguf.GGUFReader, arch: str) -> int:
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if tokens is not None:
        return len(tokens.data)
    size = field_value(reader, f"{arch}.vocab_size")
    return int(size) if isinstance(size, int) else 0
