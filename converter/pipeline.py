"""The conversion pipeline: source -> checkpoint -> float GGUF -> llama.cpp quantizer -> report.

Each step is a small function so later steps slot in between (pruning works on the loaded
checkpoint before the write; offload planning follows the quantizer). Everything that can be
checked is checked before the first byte is written.
"""

import dataclasses
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

from converter.optimize.run import run as optimize
from converter.errors import OutputError
from converter.gguf_out import FLOAT_TYPES, TensorSpec, temp_path_for, write_gguf
from converter.info import tensor_types_by_name
from converter.offload import DEFAULT_CTX, record_plan
from converter.paths import DEFAULT_QUANT
from converter.quantize import check_quant, quantize_gguf
from converter.report import Report, Timings, types_by_kind
from converter.source import Source, resolve_source

if TYPE_CHECKING:  # torch-backed: imported when a checkpoint is loaded, not for input errors
    from converter.architectures.base import Architecture
    from converter.checkpoint import Checkpoint

_FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
}


@dataclass
class ConvertOptions:
    """How to convert; the defaults give the chatbot's usual Q4_K_M file."""

    quant: str = DEFAULT_QUANT
    allow_pickle: bool = False
    report_path: Path | None = None
    show_progress: bool = False
    threads: int | None = None
    # GGUF tensor name -> mean of x^2 per input column, for the quantizer.
    imatrix: dict[str, np.ndarray] | None = None
    # (regex on GGUF tensor names, GGML type name) overrides for the quantizer.
    tensor_types: list[tuple[str, str]] = field(default_factory=list)
    # GPU memory in bytes: when set, an offload plan for it is stored in the GGUF.
    gpu_memory: int | None = None
    ctx: int = DEFAULT_CTX  # context the offload plan sizes the KV cache for
    # Calibration, pruning, healing and the computed importance matrix (converter.optimize.run).
    calibration: list[Path] = field(default_factory=list)  # default: data/calibration
    prune_layers: int = 0
    prune_ffn: float = 0.0
    prune_heads: float = 0.0  # KV-head groups per block, or a ratio below 1
    prune: float = 0.0  # automatic plan: about this share of the block parameters
    per_layer: bool = False  # let widths differ per block (written as deci)
    heal_steps: int = 0
    device: str = "auto"
    use_imatrix: bool = True  # computed from calibration when quantizing below 8 bits
    evaluate: bool = False  # perplexity and speed before/after in the report
    say: Callable[[str], None] | None = None  # where the pruning plan is printed


@dataclass
class ConversionResult:
    """The written file and what the conversion measured."""

    output: Path
    report: Report


@dataclass
class Prepared:
    """A checkpoint ready to write: its architecture writer and tensor plan, all validated."""

    source: Source
    checkpoint: "Checkpoint"
    architecture: "Architecture"
    tensors: list[TensorSpec]


def convert(
    source: str | Path, output: Path, options: ConvertOptions | None = None
) -> ConversionResult:
    """Convert SOURCE (folder or hub id) into the GGUF `output`."""
    options = options or ConvertOptions()
    timings = Timings()
    check_quant(options.quant, has_imatrix=bool(options.imatrix) or optimize.wants_imatrix(options))
    output = check_output(Path(output))
    with timings.step("load"):
        src = resolve_source(source)
        check_not_source(src.path, output)
        checkpoint = load_checkpoint(src, options)
        validate(checkpoint)
    if optimize.wanted(options):
        return optimize.convert_optimized(checkpoint, output, options, source=src, timings=timings)
    return convert_checkpoint(checkpoint, output, options, source=src, timings=timings)


def convert_checkpoint(
    checkpoint: "Checkpoint",
    output: Path,
    options: ConvertOptions | None = None,
    *,
    source: Source | None = None,
    timings: Timings | None = None,
) -> ConversionResult:
    """The pipeline from a loaded checkpoint on; also takes an in-memory (pruned) one."""
    options = options or ConvertOptions()
    timings = timings if timings is not None else Timings()
    quant = check_quant(options.quant, has_imatrix=bool(options.imatrix))
    output = check_output(Path(output))
    source = source or Source(path=checkpoint.tokenizer_dir, spec=str(checkpoint.tokenizer_dir))
    with timings.step("prepare"):
        prepared = prepare(source, checkpoint)
    extra: dict[str, Any] = {}
    sizes = write_output(prepared, output, quant, options, timings, extra)
    if options.gpu_memory is not None:
        with timings.step("plan"):
            extra["offload"] = record_plan(output, options.gpu_memory, options.ctx)
    report = build_report(prepared, output, quant, sizes, timings, extra)
    if options.report_path is not None:
        report.write_json(Path(options.report_path))
    return ConversionResult(output=output, report=report)


def check_output(output: Path) -> Path:
    """The output must be a file path in an existing folder this process can write."""
    output = output.expanduser().absolute()
    if output.is_dir():
        raise OutputError(
            f"output {output} is a folder; give a file name such as {output}/model.gguf"
        )
    folder = output.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from exc
    return output


def check_not_source(source_dir: Path, output: Path) -> None:
    """Writing must never replace the source folder or any file in it."""
    target = output.resolve()
    source_dir = source_dir.resolve()
    if target == source_dir or (target.exists() and target.is_relative_to(source_dir)):
        raise OutputError(
            f"output {output} would overwrite the source checkpoint's own file; choose another name"
        )


def load_checkpoint(source: Source, options: ConvertOptions) -> "Checkpoint":
    """Index the checkpoint's config and weights (memory-mapped; no tensor data read)."""
    from converter.checkpoint import Checkpoint

    return Checkpoint.open(source.path, allow_pickle=options.allow_pickle)


def validate(checkpoint: "Checkpoint") -> None:
    """Architecture, hyperparameters, tensor names and tokenizer, checked on a writer that
    writes nothing: a bad source fails in a second, not after calibration or pruning."""
    from converter.architectures import architecture_for
    from converter.vocab import add_vocab

    architecture = architecture_for(checkpoint)
    architecture.tensor_specs()
    writer = gguf.GGUFWriter(None, architecture.gguf_arch_name)
    architecture.add_hparams(writer)
    add_vocab(writer, checkpoint.tokenizer_dir, architecture.vocab_size)


def prepare(source: Source, checkpoint: "Checkpoint") -> Prepared:
    """Pick the architecture writer and plan every tensor (shapes only, no data read)."""
    from converter.architectures import architecture_for

    architecture = architecture_for(checkpoint)
    return Prepared(source, checkpoint, architecture, architecture.tensor_specs())


def write_output(
    prepared: Prepared,
    output: Path,
    quant: str,
    options: ConvertOptions,
    timings: Timings,
    extra: dict[str, Any],
) -> dict[str, int]:
    """Float types are written directly; the others go through a float GGUF and llama.cpp."""
    sizes = {"source weights": prepared.checkpoint.weight_bytes()}
    if quant in FLOAT_TYPES:
        with timings.step("write"):
            write_float_gguf(prepared, output, quant, options, extra)
    else:
        float_path = temp_path_for(output, ".float")
        try:
            with timings.step("write"):
                float_type = source_float_type(prepared)
                write_float_gguf(prepared, float_path, float_type, options, extra, atomic=False)
            sizes["float gguf"] = float_path.stat().st_size
            with timings.step("quantize"):
                quantize_file(float_path, output, quant, options)
        finally:
            float_path.unlink(missing_ok=True)
    sizes["output"] = output.stat().st_size
    return sizes


def write_float_gguf(
    prepared: Prepared,
    dest: Path,
    float_type: str,
    options: ConvertOptions,
    extra: dict[str, Any],
    *,
    atomic: bool = True,
) -> None:
    """Metadata (hyperparameters, tokenizer) then tensors, streamed into `dest`."""
    from converter.vocab import add_vocab

    arch = prepared.architecture

    def add_metadata(writer: gguf.GGUFWriter) -> None:
        writer.add_name(prepared.source.spec.rstrip("/").split("/")[-1])
        arch.add_hparams(writer)
        writer.add_file_type(_FILE_TYPES[float_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        summary = add_vocab(writer, prepared.checkpoint.tokenizer_dir, arch.vocab_size)
        extra["vocab"] = _as_dict(summary)

    write_gguf(
        dest,
        arch.gguf_arch_name,
        add_metadata,
        prepared.tensors,
        float_type,
        show_progress=options.show_progress,
        atomic=atomic,
    )


def source_float_type(prepared: Prepared) -> str:
    """Quantize from the source's own float type, so the quantizer sees the exact weights."""
    import torch

    dtypes = {info.dtype for _, info in prepared.checkpoint.items() if len(info.shape) == 2}
    if dtypes == {torch.bfloat16}:
        return "BF16"
    if dtypes == {torch.float16}:
        return "F16"
    return "F32"


def quantize_file(float_path: Path, output: Path, quant: str, options: ConvertOptions) -> None:
    quantize_gguf(
        float_path,
        output,
        quant,
        imatrix=options.imatrix,
        tensor_types=options.tensor_types,
        threads=options.threads or os.cpu_count(),
        show_progress=options.show_progress,
    )


def build_report(
    prepared: Prepared,
    output: Path,
    quant: str,
    sizes: dict[str, int],
    timings: Timings,
    extra: dict[str, Any],
) -> Report:
    types = tensor_types_by_name(output)
    return Report(
        source=prepared.source.spec,
        architecture=prepared.checkpoint.architecture,
        gguf_architecture=prepared.architecture.gguf_arch_name,
        output=str(output),
        quant=quant,
        tensor_count=len(types),
        parameter_count=sum(int(np.prod(spec.shape)) for spec in prepared.tensors),
        types_by_kind=types_by_kind(types),
        sizes=sizes,
        timings_s={**timings, "total": round(sum(timings.values()), 3)},
        extra=extra,
    )


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
