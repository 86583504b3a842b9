"""What a conversion is asked to do, in small typed groups, and the one place they are checked.

Everything the user can get wrong is refused here with a message naming the flag, before any
output is written: `check_options` from the options alone (at the start), `check_for_model`
against the checkpoint's config.json (before the first weight is read). The steps themselves
(pruning, healing, quantizing) trust what they are given.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from converter.errors import ConverterError
from converter.gguf_keys import CHAT_CTX
from converter.paths import DEFAULT_QUANT

if TYPE_CHECKING:
    from converter.mix import MixTarget

HIGH_PRECISION = frozenset({"F32", "F16", "BF16", "Q8_0"})  # no importance matrix needed
MAX_PRUNE = 0.9  # --prune: beyond this nothing of the model is left to heal


@dataclass(frozen=True)
class QuantizeOptions:
    """How llama.cpp's quantizer runs: threads, per-tensor types, the importance matrix."""

    threads: int | None = None  # default: every core
    # (regex on GGUF tensor names, GGML type name) overrides, first match wins.
    tensor_types: tuple[tuple[str, str], ...] = ()
    use_imatrix: bool = True  # computed from calibration when quantizing below 8 bits


@dataclass(frozen=True)
class OffloadOptions:
    """Plan GPU offload for a card of `gpu_memory` bytes and store the plan in the GGUF."""

    gpu_memory: int
    ctx: int = CHAT_CTX  # the context the plan sizes the KV cache for


@dataclass(frozen=True)
class OptimizeOptions:
    """Calibration, pruning and healing (converter.optimize)."""

    calibration: tuple[Path, ...] = ()  # default: every text file in data/calibration
    prune_layers: int = 0
    prune_ffn: float = 0.0
    prune_heads: float = 0.0  # KV-head groups per block, or a ratio below 1
    prune: float = 0.0  # automatic plan: about this share of the block parameters
    per_layer: bool = False  # let widths differ per block (written as deci)
    heal_steps: int = 0
    device: str = "auto"

    @property
    def prunes(self) -> bool:
        return bool(self.prune_layers or self.prune_ffn or self.prune_heads or self.prune)


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert; the defaults give the chatbot's usual Q4_K_M file."""

    quant: str = DEFAULT_QUANT
    allow_pickle: bool = False
    report_path: Path | None = None
    show_progress: bool = False
    evaluate: bool = False  # perplexity and speed before/after in the report
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    optimize: OptimizeOptions = field(default_factory=OptimizeOptions)
    offload: OffloadOptions | None = None
    mix: "MixTarget | None" = None  # --target-size / --target-bpw (converter.mix)
    fastest_within: float | None = None  # --fastest-within PCT (converter.fastest)

    @property
    def wants_imatrix(self) -> bool:
        """On by default when quantizing below 8 bits (mixes and --fastest-within included);
        --no-imatrix turns it off."""
        low = self.quant.upper() not in HIGH_PRECISION or self.chooses_types
        return self.quantize.use_imatrix and low

    @property
    def chooses_types(self) -> bool:
        """Whether the converter picks the types itself (a mix, or the fastest candidate)."""
        return self.mix is not None or self.fastest_within is not None

    @property
    def needs_torch(self) -> bool:
        """Whether the conversion runs the torch steps (converter.optimize) at all."""
        return self.optimize.prunes or self.optimize.heal_steps > 0 or self.wants_imatrix


def check_options(options: ConvertOptions, *, imatrix_possible: bool = True) -> str:
    """Refuse impossible requests from the options alone; the canonical quantization name."""
    from converter.quantize import check_quant  # loads llama.cpp: only once converting

    quant = check_quant(options.quant, has_imatrix=imatrix_possible and options.wants_imatrix)
    if options.offload is not None:
        check_ctx(options.offload.ctx)
    _check_pruning(options.optimize)
    _check_choice(options)
    return quant


def _check_choice(options: ConvertOptions) -> None:
    """--target-size / --target-bpw / --fastest-within: one at a time, each with a sane figure."""
    if options.mix is not None and options.fastest_within is not None:
        raise ConverterError("--fastest-within picks the types itself: leave out --target-size")
    pct = options.fastest_within
    if pct is not None and not (0 < pct < float("inf")):
        raise ConverterError(f"--fastest-within {pct}: give a positive percentage, e.g. 5")
    if options.mix is not None and options.mix.bpw is not None:
        from converter.mix import check_bpw

        check_bpw(options.mix.bpw)


def _check_pruning(opt: OptimizeOptions) -> None:
    if opt.prune and not 0.0 < opt.prune <= MAX_PRUNE:
        raise ConverterError(
            f"--prune {opt.prune}: give a ratio above 0 and at most {MAX_PRUNE}, e.g. 0.2"
        )
    if opt.prune and (opt.prune_layers or opt.prune_ffn or opt.prune_heads):
        raise ConverterError("--prune plans by itself: leave out --prune-layers/-ffn/-heads")
    if opt.prune_layers < 0:
        raise ConverterError(f"--prune-layers {opt.prune_layers}: give a number of blocks >= 0")
    if not 0.0 <= opt.prune_ffn < 1.0:
        raise ConverterError(
            f"--prune-ffn {opt.prune_ffn}: give a ratio from 0 to below 1, e.g. 0.2"
        )
    heads = opt.prune_heads
    if heads < 0 or (heads >= 1 and heads != int(heads)):
        raise ConverterError(f"--prune-heads {heads}: give a whole number of groups or a ratio < 1")
    if opt.heal_steps < 0:
        raise ConverterError(f"--heal-steps {opt.heal_steps}: give a number of steps >= 0")
    if opt.heal_steps and not opt.prunes:
        raise ConverterError("--heal-steps recovers from pruning: add a --prune option")


def check_for_model(opt: OptimizeOptions, config: dict) -> None:
    """Refuse what this model cannot give (blocks, KV-head groups), from config.json alone."""
    n_layers = int(config.get("num_hidden_layers") or 0)
    if opt.prune_layers and not opt.prune_layers < n_layers:
        raise ConverterError(
            f"--prune-layers {opt.prune_layers}: the model has {n_layers} blocks; "
            f"remove between 0 and {n_layers - 1}"
        )
    kv_heads = int(config.get("num_key_value_heads") or config.get("num_attention_heads") or 0)
    if opt.prune_heads and kv_groups_removed(opt.prune_heads, kv_heads) >= kv_heads:
        raise ConverterError(
            f"--prune-heads {opt.prune_heads}: blocks have {kv_heads} KV-head groups; "
            f"remove at most {kv_heads - 1} per block"
        )


def kv_groups_removed(heads: float, kv_heads: int) -> int:
    """--prune-heads as a count of KV-head groups per block: a whole number, or a ratio < 1."""
    return int(heads) if heads >= 1 else round(heads * kv_heads)


def check_ctx(n_ctx: int) -> int:
    """A context length an offload plan can use, or a ConverterError."""
    if n_ctx <= 0:
        raise ConverterError(f"--ctx must be a positive number of tokens, not {n_ctx}")
    return n_ctx
