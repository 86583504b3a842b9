"""What every architecture writer does, with hooks for what differs.

A subclass names its GGUF architecture and overrides only the hooks that differ:
`add_hparams` (config -> GGUF keys), `block_widths` (one FFN width and head count for every
block, or one per block), `gguf_name` (HF tensor name -> GGUF name, via
`gguf.get_tensor_name_map`), `transform` (per-tensor change such as llama's Q/K permute) and
`extra_tensors` (tensors computed from the config, such as Llama 3's rope factors).
A transform must keep the tensor's shape: shapes are written to the file before any data.
"""

from typing import Any, ClassVar

import gguf
import torch

from converter.checkpoint import Checkpoint
from converter.errors import SourceError
from converter.gguf_out import TensorSpec

_MISSING = object()
Widths = int | list[int]
# Stored buffers that are recomputed at load time, never weights.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)


class Architecture:
    """Writes one HF architecture as GGUF; registered by HF class name in `architectures`."""

    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    # converter.optimize.prune rewrites Llama-style blocks; others refuse --prune options.
    prunable: ClassVar[bool] = True

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.n_blocks = int(self.hparam("num_hidden_layers"))
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_blocks)

    @property
    def gguf_arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def hparam(self, *keys: str, default: Any = _MISSING) -> Any:
        """The first of `keys` present in config.json; a SourceError names it when none is."""
        for key in keys:
            if self.config.get(key) is not None:
                return self.config[key]
        if default is _MISSING:
            raise SourceError(f"config.json lacks {keys[0]}, which {self.gguf_arch_name} needs")
        return default

    @property
    def vocab_size(self) -> int:
        return int(self.hparam("vocab_size"))

    @property
    def n_head(self) -> int:
        return int(self.hparam("num_attention_heads"))

    @property
    def n_head_kv(self) -> int:
        return int(self.hparam("num_key_value_heads", default=self.n_head))

    @property
    def head_dim(self) -> int:
        return int(self.hparam("head_dim", default=self.hparam("hidden_size") // self.n_head))

    @property
    def rope_dims(self) -> int:
        """Dimensions of each head that RoPE rotates: all of them unless a subclass says less."""
        return self.head_dim

    @property
    def tied_embeddings(self) -> bool:
        """Tied when config says so, or when the checkpoint simply has no lm_head."""
        return bool(self.config.get("tie_word_embeddings")) or "lm_head.weight" not in (
            self.checkpoint
        )

    def rope_parameters(self) -> dict[str, Any]:
        """RoPE settings: transformers 5 `rope_parameters`, or older `rope_theta`/`rope_scaling`."""
        params = dict(self.config.get("rope_parameters") or self.config.get("rope_scaling") or {})
        if "rope_type" not in params and "type" in params:
            params["rope_type"] = params["type"]
        params.setdefault("rope_theta", self.config.get("rope_theta", 10000.0))
        return params

    # ---- hooks -------------------------------------------------------------------------------

    def add_hparams(self, writer: gguf.GGUFWriter) -> None:
        """Hyperparameters llama.cpp reads for a decoder-only transformer."""
        writer.add_block_count(self.n_blocks)
        writer.add_context_length(int(self.hparam("max_position_embeddings")))
        writer.add_embedding_length(int(self.hparam("hidden_size")))
        ffn, heads, kv_heads = self.block_widths()
        writer.add_feed_forward_length(ffn)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_layer_norm_rms_eps(float(self.hparam("rms_norm_eps")))
        writer.add_rope_freq_base(float(self.rope_parameters()["rope_theta"]))
        writer.add_rope_dimension_count(self.rope_dims)
        writer.add_vocab_size(self.vocab_size)
        self.add_rope_scaling(writer)

    def block_widths(self) -> tuple[Widths, Widths, Widths]:
        """FFN width, query heads and KV heads: one number for every block, or a list of one
        per block (written as a GGUF array)."""
        return int(self.hparam("intermediate_size")), self.n_head, self.n_head_kv

    def add_rope_scaling(self, writer: gguf.GGUFWriter) -> None:
        """Linear and YaRN scaling as GGUF keys; anything else is refused, never ignored."""
        params = self.rope_parameters()
        rope_type = params.get("rope_type") or "default"
        if rope_type == "default":
            return
        if rope_type == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(params["factor"]))
        elif rope_type == "yarn":
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(params["factor"]))
            writer.add_rope_scaling_orig_ctx_len(int(params["original_max_position_embeddings"]))
        elif not self.handles_rope_type(rope_type):
            raise SourceError(
                f"unsupported rope scaling {rope_type!r} for {self.checkpoint.architecture}; "
                "supported: default, linear, yarn" + self.extra_rope_types()
            )

    def handles_rope_type(self, rope_type: str) -> bool:
        """Subclasses that turn a rope type into tensors (Llama 3) say so here."""
        return False

    def extra_rope_types(self) -> str:
        return ""

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF name of a checkpoint tensor, None to leave it out."""
        if hf_name.endswith(_SKIPPED_SUFFIXES):
            return None
        if hf_name == "lm_head.weight" and self.tied_embeddings:
            return None  # llama.cpp reuses token_embd for the output layer
        name = self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SourceError(
                f"unexpected tensor {hf_name} for {self.checkpoint.architecture}: "
                "the checkpoint does not match its config.json"
            )
        return name

    def transform(self, gguf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Per-tensor change on the way in; same shape out."""
        return tensor

    def extra_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Tensors computed from the config rather than read from the checkpoint."""
        return []

    # ---- plan --------------------------------------------------------------------------------

    def tensor_specs(self) -> list[TensorSpec]:
        """Every GGUF tensor with its shape and a loader: nothing is read until it is written."""
        specs = [
            TensorSpec(name, tuple(t.shape), lambda t=t: t) for name, t in self.extra_tensors()
        ]
        for hf_name, info in self.checkpoint.items():
            name = self.gguf_name(hf_name)
            if name is not None:
                specs.append(TensorSpec(name, info.shape, self._loader(hf_name, name)))
        self.check_complete({spec.name for spec in specs})
        return specs

    def _loader(self, hf_name: str, name: str):
        return lambda: self.transform(name, self.checkpoint.load(hf_name))

    def check_complete(self, names: set[str]) -> None:
        """Refuse a checkpoint missing the embedding, final norm or any block's tensors."""
        required = ["token_embd.weight", "output_norm.weight"]
        required += [f"blk.{i}.attn_norm.weight" for i in range(self.n_blocks)]
        missing = [name for name in required if name not in names]
        if missing:
            raise SourceError(
                f"the checkpoint lacks {', '.join(missing[:3])}"
                f"{' and more' if len(missing) > 3 else ''}: it is incomplete"
            )
