"""Llama: Q/K rows permuted to llama.cpp's RoPE pairing; Llama 3 rope scaling as rope factors."""

import math

import gguf
import torch

from converter.architectures import register
from converter.architectures.base import Architecture


def permute_rope(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF pairs RoPE dims (i, i + d/2) per head; llama.cpp pairs neighbours (2i, 2i + 1)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


@register("LlamaForCausalLM")
class Llama(Architecture):
    """Meta's Llama 2/3 and the many models that reuse its layout (SmolLM2 among them)."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA

    def transform(self, gguf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        # Biases too, for Llama variants with attention_bias=True.
        if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
            return permute_rope(tensor, self.n_head)
        if gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
            return permute_rope(tensor, self.n_head_kv)
        return tensor

    def handles_rope_type(self, rope_type: str) -> bool:
        return rope_type == "llama3"

    def extra_rope_types(self) -> str:
        return ", llama3"

    def extra_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Llama 3.1+ scales low RoPE frequencies: llama.cpp reads that from `rope_freqs`."""
        params = self.rope_parameters()
        if params.get("rope_type") != "llama3":
            return []
        return [("rope_freqs.weight", llama3_rope_factors(params, self.head_dim))]


def llama3_rope_factors(params: dict, head_dim: int) -> torch.Tensor:
    """Per-frequency divisors of Llama 3's rope scaling, as llama.cpp's own converter computes."""
    base = float(params["rope_theta"])
    factor = float(params.get("factor", 8.0))
    low_freq_factor = float(params.get("low_freq_factor", 1.0))
    high_freq_factor = float(params.get("high_freq_factor", 4.0))
    old_context = float(params.get("original_max_position_embeddings", 8192))
    low_wavelen = old_context / low_freq_factor
    high_wavelen = old_context / high_freq_factor
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor
            )
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)
