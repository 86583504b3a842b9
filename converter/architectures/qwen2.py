"""Qwen2: NEOX RoPE (no permute) and biases on Q, K and V."""

import gguf

from converter.architectures import register
from converter.architectures.base import Architecture


@register("Qwen2ForCausalLM")
class Qwen2(Architecture):
    """Qwen2 and Qwen2.5: biases map through the same name table as weights."""

    gguf_arch = gguf.MODEL_ARCH.QWEN2
