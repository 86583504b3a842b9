"""Gemma 3 (text): llama.cpp's `gemma3` architecture.

What differs from Llama, and where it goes:
- RMSNorm multiplies by (1 + weight): llama.cpp's gemma graphs multiply by the stored weight, so
  every norm weight is written plus one, as llama.cpp's own converter does.
- Sliding-window (local) and global layers: the window, the per-layer pattern and the local
  layers' RoPE base are written as keys; linear RoPE scaling applies to global layers only,
  in llama.cpp as in transformers.
- Query scaling: transformers scales by query_pre_attn_scalar**-0.5, llama.cpp by a fixed rule
  (head_dim**-0.5, or (hidden / heads)**-0.5 for the 62-layer 27B). Q passes through q_norm
  before attention, so the ratio is folded into q_norm's weight: exact, and 1 for Google's own
  models.
- Embeddings are scaled by sqrt(hidden) inside llama.cpp's graph, as in transformers: nothing
  to write. Output tied to the embeddings; final logit soft-capping when the config has it.
NEOX RoPE on both sides: no Q/K permute.
"""

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import torch

from converter.architectures import register
from converter.architectures.base import Architecture
from converter.errors import SourceError

logger = logging.getLogger(__name__)
_NOTED: set[Path] = set()

# llama.cpp gives the 27B (62 blocks) the query scale of hidden / heads instead of head_dim.
_LLAMA_CPP_27B_BLOCKS = 62
SLIDING, FULL = "sliding_attention", "full_attention"
_DEFAULT_PATTERN = 6  # five local layers, then a global one


@register("Gemma3ForCausalLM")
class Gemma3(Architecture):
    """Gemma 3 270M and 1B, and the text half of the larger (multimodal) ones."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    prunable = False

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint)
        self.refuse_unsupported()

    def refuse_unsupported(self) -> None:
        """Settings llama.cpp's gemma3 graph has no place for: refused, never dropped."""
        if self.config.get("attn_logit_softcapping") is not None:
            raise SourceError(
                "config.json sets attn_logit_softcapping, which llama.cpp's gemma3 does not apply"
            )
        if self.config.get("use_bidirectional_attention"):
            raise SourceError(
                "config.json sets use_bidirectional_attention (an embedding model); "
                "the converter writes causal language models only"
            )

    def rope_parameters(self) -> dict[str, Any]:
        """The global layers' RoPE: transformers 5 nests it under full_attention."""
        nested = self.config.get("rope_parameters") or {}
        if FULL in nested:
            params = dict(nested[FULL])
            params.setdefault("rope_theta", 1_000_000.0)
            return params
        params = dict(self.config.get("rope_scaling") or {})
        if "rope_type" not in params and "type" in params:
            params["rope_type"] = params["type"]
        params.setdefault("rope_theta", self.config.get("rope_theta", 1_000_000.0))
        return params

    def local_rope_theta(self) -> float:
        nested = self.config.get("rope_parameters") or {}
        if SLIDING in nested:
            if (nested[SLIDING].get("rope_type") or "default") != "default":
                raise SourceError("scaled RoPE on sliding-window layers is not supported")
            return float(nested[SLIDING].get("rope_theta", 10_000.0))
        return float(self.config.get("rope_local_base_freq", 10_000.0))

    def layer_types(self) -> list[str]:
        """Per block: sliding_attention or full_attention (old configs: a repeating pattern)."""
        types = self.config.get("layer_types")
        if types is None:
            pattern = int(
                self.config.get("sliding_window_pattern")
                or self.config.get("_sliding_window_pattern")
                or _DEFAULT_PATTERN
            )
            types = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(self.n_blocks)]
        if len(types) != self.n_blocks or set(types) - {SLIDING, FULL}:
            raise SourceError(
                f"config.json's layer_types must list {SLIDING} or {FULL} for each of the "
                f"{self.n_blocks} blocks"
            )
        return list(types)

    def add_hparams(self, writer: gguf.GGUFWriter) -> None:
        super().add_hparams(writer)
        sliding = [t == SLIDING for t in self.layer_types()]
        if any(sliding):
            writer.add_sliding_window(int(self.hparam("sliding_window")))
            writer.add_sliding_window_pattern(sliding)
            writer.add_rope_freq_base_swa(self.local_rope_theta())
        softcap = self.final_logit_softcapping
        if softcap is not None:
            writer.add_final_logit_softcapping(float(softcap))

    @property
    def final_logit_softcapping(self) -> float | None:
        return self.config.get("final_logit_softcapping")

    def query_scale_fold(self) -> float:
        """transformers' query scale over llama.cpp's, folded into q_norm's weight."""
        if self.n_blocks == _LLAMA_CPP_27B_BLOCKS:
            llama_cpp = (int(self.hparam("hidden_size")) / self.n_head) ** -0.5
        else:
            llama_cpp = self.head_dim**-0.5
        ours = float(self.hparam("query_pre_attn_scalar", default=self.head_dim)) ** -0.5
        return ours / llama_cpp

    def transform(self, gguf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not gguf_name.endswith("norm.weight"):
            return tensor
        shifted = tensor.float() + 1.0  # Gemma's RMSNorm: x * (1 + weight)
        if gguf_name.endswith("attn_q_norm.weight"):
            fold = self.query_scale_fold()
            if not math.isclose(fold, 1.0):
                shifted = shifted * fold
        return shifted


@register("Gemma3ForConditionalGeneration")
class Gemma3Multimodal(Gemma3):
    """Gemma 3 4B and larger with their vision tower: the language model alone is written.

    llama.cpp runs images through a separate projector file (mmproj), which this converter does
    not write; the text model in the main file is the same as a Gemma3ForCausalLM's.
    """

    NOTE = "the vision tower and projector are left out: the GGUF holds the text model only"
    _PREFIXES = ("model.language_model.", "language_model.model.", "language_model.")
    _VISION = ("vision_tower", "multi_modal_projector", "multimodal_projector", "vision_model")

    def __init__(self, checkpoint) -> None:
        text_config = checkpoint.config.get("text_config")
        if not isinstance(text_config, dict):
            raise SourceError("config.json lacks text_config, which Gemma 3 multimodal needs")
        # The text model's settings over the outer config's shared ones (tokens, tying); the
        # caller's checkpoint keeps its own config.
        super().__init__(replace(checkpoint, config={**checkpoint.config, **text_config}))
        if checkpoint.tokenizer_dir not in _NOTED:  # once per source, not per pipeline step
            _NOTED.add(checkpoint.tokenizer_dir)
            logger.warning("%s: %s", checkpoint.architecture, self.NOTE)

    @property
    def final_logit_softcapping(self) -> float | None:
        return None  # transformers' Gemma3ForConditionalGeneration does not apply it

    @property
    def tied_embeddings(self) -> bool:
        return self.config.get("tie_word_embeddings", True) or "lm_head.weight" not in (
            self.checkpoint
        )

    def gguf_name(self, hf_name: str) -> str | None:
        stripped = hf_name
        for prefix in self._PREFIXES:
            if hf_name.startswith(prefix):
                stripped = "model." + hf_name.removeprefix(prefix)
                break
        if stripped.startswith(("model.", "lm_head")) and not any(
            part in stripped for part in self._VISION
        ):
            return super().gguf_name(stripped)
        return None
