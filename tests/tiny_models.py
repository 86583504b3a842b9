"""Tiny random-weight Hugging Face checkpoints of every supported architecture, for fast tests.

Each model has 2 layers, hidden size 64 and a tokenizer trained by tests/tiny_tokenizers.py, and
is saved with `save_pretrained` (safetensors), exactly like a downloaded checkpoint. Built models
are cached on disk under the model cache, keyed by BUILD_VERSION, so a test session builds each
once. Weights are drawn wider than the usual 0.02 so next-token logits are well separated and
top-1 comparisons test the conversion, not float rounding.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converter.paths import cache_dir
from tests.tiny_tokenizers import build_bpe_tokenizer, build_spm_tokenizer

BUILD_VERSION = "v2"
_COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.1,
}
_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 256,
}


def _llama_bpe(vocab_size: int):
    from transformers import LlamaConfig

    # Llama 3 style: BPE tokenizer and llama3 rope scaling (written as rope_freqs).
    return LlamaConfig(**_COMMON, vocab_size=vocab_size, rope_parameters=_LLAMA3_ROPE)


def _llama_spm(vocab_size: int):
    from transformers import LlamaConfig

    # Tied embeddings, and attention biases (which need the same RoPE permute as Q/K weights).
    return LlamaConfig(
        **_COMMON, vocab_size=vocab_size, tie_word_embeddings=True, attention_bias=True
    )


def _mistral_spm(vocab_size: int):
    from transformers import MistralConfig

    return MistralConfig(**_COMMON, vocab_size=vocab_size, sliding_window=None)


def _qwen2(vocab_size: int):
    from transformers import Qwen2Config

    return Qwen2Config(**_COMMON, vocab_size=vocab_size, tie_word_embeddings=True)


def _qwen3(vocab_size: int):
    from transformers import Qwen3Config

    # head_dim 32 differs from hidden/heads = 16, as in real Qwen3 models.
    return Qwen3Config(**_COMMON, vocab_size=vocab_size, head_dim=32)


def _llama_wide(vocab_size: int):
    from transformers import LlamaConfig

    # ~25M parameters: big enough that writing and quantizing take a moment to interrupt.
    wide = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6}
    return LlamaConfig(**{**_COMMON, **wide}, vocab_size=vocab_size, tie_word_embeddings=True)


# name -> (config builder, tokenizer kind, style): one per supported architecture/tokenizer pair.
MODELS: dict[str, tuple[Callable[[int], Any], str, str]] = {
    "llama-bpe": (_llama_bpe, "bpe", "llama3"),
    "llama-spm": (_llama_spm, "spm", ""),
    "mistral-spm": (_mistral_spm, "spm", ""),
    "qwen2": (_qwen2, "bpe", "qwen2"),
    "qwen3": (_qwen3, "bpe", "qwen2"),
}
# Not tiny: for tests that must catch a conversion while it runs.
EXTRA_MODELS = {"llama-wide": (_llama_wide, "spm", "")}


def tiny_model(name: str) -> Path:
    """The cached checkpoint folder of tiny model `name`, built on first use."""
    dest = cache_dir() / "test-models" / f"{name}-{BUILD_VERSION}"
    if (dest / "config.json").is_file():
        return dest
    work = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    build_tiny_model(name, work)
    try:
        work.rename(dest)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(work, ignore_errors=True)
    return dest


def build_tiny_model(name: str, dest: Path) -> None:
    """Write tokenizer files and a random-weight model of `name` into dest."""
    import torch
    from transformers import AutoModelForCausalLM

    make_config, kind, style = {**MODELS, **EXTRA_MODELS}[name]
    vocab_size = build_spm_tokenizer(dest) if kind == "spm" else build_bpe_tokenizer(dest, style)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(vocab_size), dtype=torch.float32)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.normal_(0.0, 0.1)  # HF zero-inits biases; make them matter
    model.save_pretrained(dest)
