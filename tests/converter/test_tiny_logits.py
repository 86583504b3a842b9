"""Converted GGUFs compute what transformers computes, for every supported architecture.

Each tiny model is converted to F32 and run by llama.cpp with an F32 KV cache on the same token
ids as transformers: next-token logits must agree in top-1 on >= 99% of positions and differ by
at most F32_BOUND. With llama.cpp's default F16 KV cache the difference is ~2e-3, so a wrong
RoPE permute, a missing bias, norm or rope factor (all far larger) cannot hide under the bound.
F16 and quantized outputs are smoke-checked: right types in the file, and logits that still
follow the reference.
"""

from pathlib import Path

import numpy as np
import pytest

from converter.info import read_summary, tensor_types_by_name
from converter.options import ConvertOptions
from converter.pipeline import convert
from tests.tiny_models import MODELS, tiny_model

F32_BOUND = 1e-4  # measured: <= 5e-6 on every tiny model
N_TOKENS = 96
GGML_TYPE_F32 = 0


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Convert (model, quant) once per session; returns the GGUF path."""
    folder = tmp_path_factory.mktemp("gguf")
    done: dict[tuple[str, str], Path] = {}

    def get(name: str, quant: str) -> Path:
        if (name, quant) not in done:
            out = folder / f"{name}-{quant}.gguf"
            convert(str(tiny_model(name)), out, ConvertOptions(quant=quant))
            done[name, quant] = out
        return done[name, quant]

    return get


@pytest.fixture(scope="session")
def reference():
    """transformers' logits on a fixed random token sequence, per model."""
    cache: dict[str, tuple[list[int], np.ndarray]] = {}

    def get(name: str) -> tuple[list[int], np.ndarray]:
        if name not in cache:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(tiny_model(name), dtype=torch.float32)
            rng = np.random.default_rng(0)
            ids = rng.integers(0, model.config.vocab_size, N_TOKENS).tolist()
            with torch.no_grad():
                cache[name] = ids, model(torch.tensor([ids])).logits[0].numpy()
        return cache[name]

    return get


def gguf_logits(path: Path, ids: list[int], f32_cache: bool = True) -> np.ndarray:
    """llama.cpp's logits at every position of `ids`."""
    import llama_cpp

    kv_type = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_cache else {}
    llm = llama_cpp.Llama(
        str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2, **kv_type
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.mark.parametrize("name", list(MODELS))
def test_f32_logits_match_transformers(name, converted, reference):
    ids, expected = reference(name)
    got = gguf_logits(converted(name, "F32"), ids)
    assert got.shape == expected.shape
    assert top1_agreement(got, expected) >= 0.99
    assert np.abs(got - expected).max() < F32_BOUND


@pytest.mark.parametrize("name", ["llama-bpe", "qwen2"])
def test_f16_output_types_and_logits(name, converted, reference):
    path = converted(name, "F16")
    types = tensor_types_by_name(path)
    assert {t for n, t in types.items() if n.endswith("norm.weight")} == {"F32"}
    assert types["blk.0.attn_q.weight"] == "F16"
    ids, expected = reference(name)
    got = gguf_logits(path, ids, f32_cache=False)
    assert top1_agreement(got, expected) >= 0.95
    assert np.abs(got - expected).max() < 0.05


@pytest.mark.parametrize(("quant", "min_top1"), [("Q8_0", 0.85), ("Q4_K_M", 0.5)])
def test_quantized_pipeline(quant, min_top1, converted, reference):
    path = converted("llama-bpe", quant)
    summary = read_summary(path)
    assert summary.file_type == quant
    assert summary.tokenizer_model == "gpt2"
    left_float = [
        name
        for name, type_name in tensor_types_by_name(path).items()
        if type_name in ("F32", "F16") and not name.endswith(("norm.weight", "rope_freqs.weight"))
    ]
    assert left_float == []
    assert path.stat().st_size < converted("llama-bpe", "F32").stat().st_size / 2
    ids, expected = reference("llama-bpe")
    got = gguf_logits(path, ids, f32_cache=False)
    assert top1_agreement(got, expected) >= min_top1
    correlation = np.corrcoef(got.ravel(), expected.ravel())[0, 1]
    assert correlation > 0.9


def test_llama3_rope_scaling_writes_rope_freqs(converted):
    types = tensor_types_by_name(converted("llama-bpe", "F32"))
    assert types["rope_freqs.weight"] == "F32"
    assert "rope_freqs.weight" not in tensor_types_by_name(converted("llama-spm", "F32"))


def test_tied_embeddings_omit_output(converted):
    assert "output.weight" not in tensor_types_by_name(converted("llama-spm", "F32"))
    assert "output.weight" in tensor_types_by_name(converted("mistral-spm", "F32"))
