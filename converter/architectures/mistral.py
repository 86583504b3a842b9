"""Mistral: llama.cpp runs it as the llama architecture (sliding window is not used there)."""

from converter.architectures import register
from converter.architectures.llama import Llama


@register("MistralForCausalLM")
class Mistral(Llama):
    """Mistral 7B and relatives: Llama's layout and RoPE permute."""
