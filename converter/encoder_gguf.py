"""A BERT sentence encoder (all-MiniLM-L6-v2) written as a GGUF that llama.cpp embeds with.

The FAQ bot embeds every question it is asked; llama.cpp runs MiniLM in about 2 ms where the
same network in numpy took 6-9 ms (its float32 matrices do not fit in cache). Only numpy,
safetensors and gguf are needed, so the chatbot can build the file on first use without torch.
Tensor names come from gguf's own BERT name map; the WordPiece vocabulary is stored the way
llama.cpp's `bert` tokenizer reads it: continuation pieces lose their "##", word-initial pieces
gain the "▁" word mark, bracketed specials stay as they are.
"""

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from converter.errors import ConverterError
from converter.files import atomic_output

SPECIALS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]")
WORD_MARK = "\u2581"
# Added to activations, not multiplied: llama.cpp's CPU add needs them in float32.
FLOAT32_ONLY = ("position_embd", "token_types")


def _piece(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else WORD_MARK + token


def _token_type(token: str) -> int:
    if token == "[UNK]":
        return gguf.TokenType.UNKNOWN
    return gguf.TokenType.CONTROL if token in SPECIALS else gguf.TokenType.NORMAL


def _add_vocab(writer: gguf.GGUFWriter, tokenizer_json: Path) -> None:
    model = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
    if model.get("type") != "WordPiece":
        raise ConverterError(f"{tokenizer_json} is not a WordPiece tokenizer; a BERT one is needed")
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_piece(token) for token in tokens])
    writer.add_token_types([_token_type(token) for token in tokens])
    writer.add_token_type_count(2)
    writer.add_bos_token_id(vocab["[CLS]"])
    writer.add_sep_token_id(vocab["[SEP]"])
    writer.add_unk_token_id(vocab["[UNK]"])
    writer.add_pad_token_id(vocab["[PAD]"])
    writer.add_mask_token_id(vocab["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


def _add_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config.get("layer_norm_eps", 1e-12))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)  # sentence-transformers' mean pooling
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def _add_tensors(writer: gguf.GGUFWriter, weights: dict[str, np.ndarray], blocks: int) -> None:
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    for name, array in weights.items():
        if name.endswith("position_ids") or name.startswith("pooler."):
            continue  # a buffer and a classification head: mean pooling uses neither
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConverterError(f"unexpected tensor {name} in a BERT encoder")
        matrix = array.ndim == 2 and not new.startswith(FLOAT32_ONLY)
        writer.add_tensor(new, array.astype(np.float16 if matrix else np.float32))


def write_encoder_gguf(folder: Path, output: Path) -> Path:
    """Write the BERT checkpoint in `folder` (config.json, model.safetensors, tokenizer.json)
    as an F16 GGUF at `output`, atomically: a reader never sees half a file."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        weights = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ConverterError(f"cannot read the sentence encoder in {folder}: {exc}") from exc
    if config.get("model_type") != "bert":
        raise ConverterError(f"{folder} holds a {config.get('model_type')} model, not BERT")
    with atomic_output(output) as temp:
        writer = gguf.GGUFWriter(temp, "bert")
        writer.add_name(folder.name)
        _add_hparams(writer, config)
        _add_vocab(writer, folder / "tokenizer.json")
        _add_tensors(writer, weights, config["num_hidden_layers"])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return output
