"""A llama model pruned to different widths per block, written as llama.cpp's `deci`.

Plain `llama` reads the FFN width and head counts from block 0 only; `deci` takes them as
arrays of block_count entries. converter.optimize.prune marks such a model with the HF class name
below and lists the widths in `layer_intermediate_sizes`, `layer_num_attention_heads` and
`layer_num_key_value_heads`. The head size is written explicitly, since llama.cpp would
otherwise derive it from block 0's head count.
"""

import gguf
import torch

from converter.architectures import register
from converter.architectures.llama import Llama, permute_rope
from converter.errors import SourceError

PRUNED_LLAMA = "PrunedLlamaForCausalLM"


@register(PRUNED_LLAMA)
class Deci(Llama):
    """Llama blocks with per-block FFN width and head counts."""

    gguf_arch = gguf.MODEL_ARCH.DECI

    def per_layer(self, key: str) -> list[int]:
        values = [int(v) for v in self.hparam(key)]
        if len(values) != self.n_blocks:
            raise SourceError(f"config {key} has {len(values)} entries for {self.n_blocks} blocks")
        return values

    def block_widths(self) -> tuple[list[int], list[int], list[int]]:
        return (
            self.per_layer("layer_intermediate_sizes"),
            self.per_layer("layer_num_attention_heads"),
            self.per_layer("layer_num_key_value_heads"),
        )

    def transform(self, gguf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Q/K permute with this block's own head count, read from the tensor's rows."""
        if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            return permute_rope(tensor, tensor.shape[0] // self.head_dim)
        return tensor
