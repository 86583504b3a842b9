"""The write and quantize steps: a checkpoint becomes a float GGUF, then llama.cpp quantizes it.

Float output types are written straight to the output; the others go through a float GGUF in a
temporary file (converter.files: removed on any exit, and by the next run after a kill), which
llama.cpp's quantizer reads and writes the output from, atomically.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np

from converter.files import temporary_path
from converter.gguf_out import FLOAT_TYPES, TensorSpec, write_gguf
from converter.options import ConvertOptions
from converter.source import Source
from converter.timings import Timings

if TYPE_CHECKING:  # torch-backed
    from converter.architectures.base import Architecture
    from converter.checkpoint import Checkpoint
    from converter.vocab import VocabSummary

FLOAT_FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
}


@dataclass(frozen=True)
class Prepared:
    """A checkpoint ready to write: its architecture writer and tensor plan, all validated."""

    source: Source
    checkpoint: "Checkpoint"
    architecture: "Architecture"
    tensors: list[TensorSpec]


@dataclass(frozen=True)
class Written:
    """What the write (and quantize) step made."""

    prepared: Prepared
    vocab: "VocabSummary"
    float_bytes: int | None  # the intermediate float GGUF, when the output was quantized


def prepare(source: Source, checkpoint: "Checkpoint") -> Prepared:
    """Pick the architecture writer and plan every tensor (shapes only, no data read)."""
    from converter.architectures import architecture_for

    architecture = architecture_for(checkpoint)
    return Prepared(source, checkpoint, architecture, architecture.tensor_specs())


# Given the float GGUF, the file type and per-tensor overrides to quantize it with (a mix).
Planner = Callable[[Path], tuple[str, list[tuple[str, str]]]]


def write_output(
    prepared: Prepared,
    output: Path,
    quant: str,
    imatrix: dict[str, np.ndarray] | None,
    options: ConvertOptions,
    timings: Timings | None = None,
    planner: Planner | None = None,
) -> Written:
    """Float types are written directly; the others go through a float GGUF and llama.cpp
    (with the types `planner` picks from the float file, when given)."""
    timings = timings if timings is not None else Timings()
    if quant in FLOAT_TYPES:
        with timings.step("write"):
            vocab = write_float_gguf(prepared, output, quant, options.show_progress)
        return Written(prepared, vocab, None)
    with temporary_path(output, ".float") as float_path:
        with timings.step("write"):
            float_type = source_float_type(prepared)
            vocab = write_float_gguf(
                prepared, float_path, float_type, options.show_progress, atomic=False
            )
        float_bytes = float_path.stat().st_size
        tensor_types = list(options.quantize.tensor_types)
        if planner is not None:
            with timings.step("mix"):
                quant, tensor_types = planner(float_path)
        with timings.step("quantize"):
            _quantize(float_path, output, quant, imatrix, options, tensor_types)
    return Written(prepared, vocab, float_bytes)


def write_float_gguf(
    prepared: Prepared, dest: Path, float_type: str, show_progress: bool, *, atomic: bool = True
) -> "VocabSummary":
    """Metadata (hyperparameters, tokenizer) then tensors, streamed into `dest`."""
    from converter.vocab import add_vocab

    arch = prepared.architecture
    vocab: list[VocabSummary] = []

    def add_metadata(writer: gguf.GGUFWriter) -> None:
        writer.add_name(prepared.source.spec.rstrip("/").split("/")[-1])
        arch.add_hparams(writer)
        writer.add_file_type(FLOAT_FILE_TYPES[float_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.append(add_vocab(writer, prepared.checkpoint.tokenizer_dir, arch.vocab_size))

    write_gguf(
        dest,
        arch.gguf_arch_name,
        add_metadata,
        prepared.tensors,
        float_type,
        show_progress=show_progress,
        atomic=atomic,
    )
    return vocab[0]


def source_float_type(prepared: Prepared) -> str:
    """Quantize from the source's own float type, so the quantizer sees the exact weights."""
    import torch

    dtypes = {info.dtype for _, info in prepared.checkpoint.items() if len(info.shape) == 2}
    if dtypes == {torch.bfloat16}:
        return "BF16"
    if dtypes == {torch.float16}:
        return "F16"
    return "F32"


def _quantize(
    float_path: Path,
    output: Path,
    quant: str,
    imatrix: dict[str, np.ndarray] | None,
    options: ConvertOptions,
    tensor_types: list[tuple[str, str]],
) -> None:
    from converter.quantize import quantize_gguf

    quantize_gguf(
        float_path,
        output,
        quant,
        imatrix=imatrix,
        tensor_types=tensor_types,
        threads=options.quantize.threads or os.cpu_count(),
        show_progress=options.show_progress,
    )
