"""Phi-3, Phi-3.5 and Phi-4-mini: llama.cpp's `phi3` architecture.

The checkpoint's fused projections are written as they are, which is what llama.cpp's phi3
expects: `qkv_proj` (Q, K then V rows) as attn_qkv, and `gate_up_proj` (gate rows, then up) as
a double-width ffn_up that llama.cpp splits in the same order for SwiGLU. NEOX RoPE on both
sides, over the first partial_rotary_factor of each head (Phi-4-mini rotates 3/4). LongRoPE
becomes two factor tensors and the attention factor key. llama.cpp picks the long factors when
the context (n_ctx) exceeds the original one, transformers when the sequence does: the two agree
while n_ctx is at most the original context (Phi-3.5: 4096, the chatbot's default).
"""

import math

import gguf
import torch

from converter.architectures import register
from converter.architectures.base import Architecture
from converter.errors import SourceError


@register("Phi3ForCausalLM")
class Phi3(Architecture):
    """Microsoft's Phi-3 family (dense)."""

    gguf_arch = gguf.MODEL_ARCH.PHI3
    prunable = False

    @property
    def rope_dims(self) -> int:
        factor = float(
            self.rope_parameters().get("partial_rotary_factor")
            or self.config.get("partial_rotary_factor")
            or 1.0
        )
        return int(factor * self.head_dim)

    @property
    def original_context(self) -> int:
        params = self.rope_parameters()
        return int(
            params.get("original_max_position_embeddings")
            or self.hparam("original_max_position_embeddings", "max_position_embeddings")
        )

    def add_hparams(self, writer: gguf.GGUFWriter) -> None:
        super().add_hparams(writer)
        # llama.cpp reads 0 as "no sliding window" (Phi-4); it runs Phi-3's window as full
        # attention, which matches transformers up to that many tokens.
        writer.add_sliding_window(int(self.config.get("sliding_window") or 0))
        if self.is_longrope():
            writer.add_rope_scaling_orig_ctx_len(self.original_context)
            writer.add_rope_scaling_attn_factors(self.longrope_attention_factor())

    def is_longrope(self) -> bool:
        return (self.rope_parameters().get("rope_type") or "default") in ("longrope", "su")

    def handles_rope_type(self, rope_type: str) -> bool:
        return rope_type in ("longrope", "su")

    def extra_rope_types(self) -> str:
        return ", longrope"

    def longrope_attention_factor(self) -> float:
        """transformers' LongRoPE attention factor: given, or from the context extension."""
        params = self.rope_parameters()
        if params.get("attention_factor") is not None:
            return float(params["attention_factor"])
        factor = params.get("factor")
        if factor is None:
            factor = int(self.hparam("max_position_embeddings")) / self.original_context
        if factor <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(factor) / math.log(self.original_context))

    def extra_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """LongRoPE's per-frequency divisors, long and short, as llama.cpp reads them."""
        if not self.is_longrope():
            return []
        params = self.rope_parameters()
        tensors = []
        for kind, tensor in (("long", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
                             ("short", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT)):  # fmt: skip
            factors = params.get(f"{kind}_factor")
            if factors is None:
                raise SourceError(f"config.json's longrope scaling lacks {kind}_factor")
            if len(factors) != self.rope_dims // 2:
                raise SourceError(
                    f"config.json's longrope {kind}_factor has {len(factors)} values; "
                    f"{self.rope_dims // 2} expected (half the rotated dimensions)"
                )
            name = gguf.TENSOR_NAMES[tensor] + ".weight"
            tensors.append((name, torch.tensor(factors, dtype=torch.float32)))
        return tensors
