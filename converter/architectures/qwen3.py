"""Qwen3: Qwen2's layout without biases, plus per-head RMS norms on Q and K."""

import gguf

from converter.architectures import register
from converter.architectures.base import Architecture


@register("Qwen3ForCausalLM")
class Qwen3(Architecture):
    """Qwen3 dense models; q_norm/k_norm map to attn_q_norm/attn_k_norm, head_dim is explicit."""

    gguf_arch = gguf.MODEL_ARCH.QWEN3
