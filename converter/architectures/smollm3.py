"""SmolLM3: Llama's layout, with RoPE left out of every fourth layer (llama.cpp's `smollm3`).

llama.cpp fixes the pattern (no RoPE in layers 3, 7, 11, ...; it reads no key for it), so a
config whose `no_rope_layers` lists any other pattern is refused rather than written wrong.
Q/K rows are permuted like Llama's; transformers' SmolLM3 rotates the same way.
"""

import gguf

from converter.architectures import register
from converter.architectures.llama import Llama
from converter.errors import SourceError

LLAMA_CPP_NO_ROPE_STEP = 4


@register("SmolLM3ForCausalLM")
class SmolLM3(Llama):
    """Hugging Face's SmolLM3 (3B)."""

    gguf_arch = gguf.MODEL_ARCH.SMOLLM3
    prunable = False

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint)
        self.check_rope_layers()
        if self.config.get("use_sliding_window") and self.config.get("sliding_window"):
            raise SourceError(
                "config.json sets use_sliding_window, which llama.cpp's smollm3 does not apply"
            )

    def check_rope_layers(self) -> None:
        """`no_rope_layers` (1 = RoPE, 0 = none) must be the pattern llama.cpp hard-codes."""
        step = LLAMA_CPP_NO_ROPE_STEP
        expected = [int((i + 1) % step != 0) for i in range(self.n_blocks)]
        listed = self.config.get("no_rope_layers")
        if listed is None:
            interval = int(self.hparam("no_rope_layer_interval", default=step))
            listed = [int((i + 1) % interval != 0) for i in range(self.n_blocks)]
        if [int(v) for v in listed] != expected:
            raise SourceError(
                f"config.json's no_rope_layers {list(listed)} is not llama.cpp's fixed pattern "
                f"(no RoPE in every {step}th layer); llama.cpp's smollm3 cannot run this model"
            )
