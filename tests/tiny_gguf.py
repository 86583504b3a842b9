"""Tiny random-weight GGUFs written directly with gguf.GGUFWriter, for tests of file handling.

They carry no tokenizer (model "none" with a vocab_size key), so llama.cpp loads them through
its low-level API in milliseconds; the `deci` architecture takes per-layer head and FFN counts.
"""

from pathlib import Path

import gguf
import numpy as np


def write_tiny_gguf(
    path: Path,
    arch: str = "llama",
    *,
    n_embd: int = 256,
    n_head: int = 4,
    kv_heads: list[int] | int = 2,
    n_ff: list[int] | int = 512,
    n_layer: int = 4,
    n_vocab: int = 4000,
    tied: bool = False,
) -> Path:
    """A random-weight model llama.cpp loads (tokenizer "none"); F16 matrices, F32 norms."""
    rng = np.random.default_rng(0)
    heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * n_layer
    ffs = n_ff if isinstance(n_ff, list) else [n_ff] * n_layer
    head_dim = n_embd // n_head
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(4096)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head if isinstance(kv_heads, int) else [n_head] * n_layer)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("none")

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", norm())
    if not tied:
        writer.add_tensor("output.weight", matrix(n_vocab, n_embd))
    for i, (kv, ff) in enumerate(zip(heads, ffs, strict=True)):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        if kv:
            writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(n_head * head_dim, n_embd))
            writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv * head_dim, n_embd))
            writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(n_embd, n_head * head_dim))
        if ff:
            writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
            writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(ff, n_embd))
            writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(ff, n_embd))
            writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(n_embd, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
