"""A tiny random-weight chat GGUF (2 layers, hidden 64, byte-level vocab, ChatML template).

Written with the gguf package in milliseconds, no torch: fast tests of the engine, the session
and the CLI run real llama.cpp on it. Its replies are random bytes; the mechanics (streaming,
KV-cache reuse, stopping, context limits) are what the tests check on it.
"""

from pathlib import Path

import gguf
import numpy as np

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 64, 128, 4, 2, 2
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: token i is byte i."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def build_tiny_chat_gguf(
    path: Path,
    seed: int = 0,
    *,
    template: str = CHATML,
    specials: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    bos: str = "<|im_start|>",
    eos: str = "<|im_end|>",
) -> Path:
    """Write the model to `path` and return it; `specials` become control tokens."""
    tokens = [*_byte_tokens(), "he", *specials]
    types = [1] * 257 + [3] * len(specials)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-chat")
    writer.add_context_length(4096)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["h e"])
    writer.add_bos_token_id(tokens.index(bos))
    writer.add_eos_token_id(tokens.index(eos))
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)
    _add_tensors(writer, len(tokens), np.random.default_rng(seed))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensors(writer: gguf.GGUFWriter, n_vocab: int, rng: np.random.Generator) -> None:
    """Random llama weights (unit norms) for every block."""

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    kv = HIDDEN // HEADS * KV_HEADS
    writer.add_tensor("token_embd.weight", weight(n_vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for i in range(LAYERS):
        for name, value in {
            "attn_norm": np.ones(HIDDEN, np.float32),
            "ffn_norm": np.ones(HIDDEN, np.float32),
            "attn_q": weight(HIDDEN, HIDDEN),
            "attn_k": weight(kv, HIDDEN),
            "attn_v": weight(kv, HIDDEN),
            "attn_output": weight(HIDDEN, HIDDEN),
            "ffn_gate": weight(FFN, HIDDEN),
            "ffn_up": weight(FFN, HIDDEN),
            "ffn_down": weight(HIDDEN, FFN),
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", value)
