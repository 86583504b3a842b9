"""The conversion pipeline: source -> optimize -> write -> quantize -> plan -> evaluate, once.

`convert` runs every step in that order; each returns a typed result and the report is built
once, at the end, from those results. Everything that can be checked is checked before the
first byte is written: the options (converter.options), the output folder, then the checkpoint
(architecture, hyperparameters, tokenizer) on a writer that writes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np

from converter.errors import OutputError
from converter.files import temporary_dir
from converter.info import tensor_types_by_name
from converter.options import ConvertOptions, OptimizeOptions, check_for_model, check_options
from converter.report import Change, Evaluation, Report, Timings, types_by_kind
from converter.source import Source, resolve_source
from converter.write import Prepared, Written, prepare, write_output

if TYPE_CHECKING:  # torch-backed: imported when a checkpoint is loaded, not for input errors
    from converter.checkpoint import Checkpoint
    from converter.dominance import PruneCheck
    from converter.fastest import FastestChoice
    from converter.mix import MixPlan
    from converter.offload import OffloadPlan
    from converter.optimize.run import Imatrix, Optimized

Say = Callable[[str], None]


@dataclass
class ConversionResult:
    """The written file and what the conversion measured."""

    output: Path
    report: Report


@dataclass(frozen=True)
class _Job:
    """One conversion's inputs, checked: where from, where to, how."""

    source: Source
    checkpoint: "Checkpoint"  # as loaded, before any pruning
    output: Path
    quant: str
    options: ConvertOptions


def convert(
    source: str | Path,
    output: Path,
    options: ConvertOptions | None = None,
    *,
    say: Say | None = None,
) -> ConversionResult:
    """Convert SOURCE (folder or hub id) into the GGUF `output`; `say` gets the pruning plan."""
    from converter.checkpoint import Checkpoint

    options = options or ConvertOptions()
    quant = check_options(options)
    output = check_output(Path(output))
    timings = Timings()
    with timings.step("load"):
        src = resolve_source(source)
        check_not_source(src.path, output)
        checkpoint = Checkpoint.open(src.path, allow_pickle=options.allow_pickle)
        validate(checkpoint)
        check_for_model(options.optimize, checkpoint.config)
        _check_budget(checkpoint, src, options)
    job = _Job(src, checkpoint, output, quant, options)
    return _run(job, timings, say or (lambda _line: None))


def convert_checkpoint(
    checkpoint: "Checkpoint", output: Path, options: ConvertOptions | None = None
) -> ConversionResult:
    """Write an already loaded (e.g. pruned, in memory) checkpoint as it is: no torch steps
    (their options are not used), so no importance matrix; then quantize, plan and evaluate."""
    options = options or ConvertOptions()
    quant = check_options(options, imatrix_possible=False)
    no_imatrix = replace(options.quantize, use_imatrix=False)
    options = replace(options, quantize=no_imatrix, optimize=OptimizeOptions())
    source = Source(path=checkpoint.tokenizer_dir, spec=str(checkpoint.tokenizer_dir))
    job = _Job(source, checkpoint, check_output(Path(output)), quant, options)
    return _run(job, Timings(), lambda _line: None)


def _run(job: _Job, timings: Timings, say: Say) -> ConversionResult:
    """The steps in order, each once; the report from what they returned."""
    optimized = _optimize(job, timings, say)
    checkpoint = optimized.checkpoint if optimized else job.checkpoint
    imatrix = optimized.imatrix if optimized else None
    with timings.step("prepare"):
        prepared = prepare(job.source, checkpoint)
    written, choice = _write(job, prepared, imatrix, timings)
    offload = _plan(job, timings)
    evaluation = _evaluate(job, optimized, timings)
    prune_check = _check_pruning(job, optimized, timings)
    report = build_report(job, written, timings, optimized, offload, evaluation, choice)
    report = replace(report, prune_check=prune_check)
    if job.options.report_path is not None:
        report.write_json(Path(job.options.report_path))
    return ConversionResult(output=job.output, report=report)


@dataclass(frozen=True)
class _Choice:
    """How the types were chosen when the converter chose them: a mix, or the fastest file."""

    quant: str  # the label the report shows instead of --quant
    mix: "MixPlan | None" = None
    fastest: "FastestChoice | None" = None


def _write(
    job: _Job, prepared: Prepared, imatrix: "Imatrix | None", timings: Timings
) -> tuple[Written, _Choice | None]:
    """Write the output: as --quant says, as a planned mix, or the fastest candidate."""
    options = job.options
    if options.fastest_within is not None:
        from converter.fastest import write_fastest

        written, fastest = write_fastest(prepared, job.output, imatrix, options, timings)
        return written, _Choice(fastest.chosen, fastest=fastest)
    if options.mix is None:
        return write_output(prepared, job.output, job.quant, imatrix, options, timings), None
    from converter.mix import MixPlanner
    from converter.optimize.calibrate import read_calibration_text

    text = read_calibration_text(options.optimize.calibration)
    user = options.quantize.tensor_types
    planner = MixPlanner(options.mix, imatrix, text, user, options.show_progress)
    # Q8_0 only routes the write through the quantizer: the planner sets every matrix's type.
    written = write_output(prepared, job.output, "Q8_0", imatrix, options, timings, planner)
    assert planner.plan is not None
    return written, _Choice(f"mix ({planner.plan.file_type} mostly)", mix=planner.plan)


def _check_budget(checkpoint: "Checkpoint", source: Source, options: ConvertOptions) -> None:
    """A --target-size or --target-bpw no file could meet is refused before calibrating
    (a pruned model is smaller: then only the exact check after writing applies)."""
    if options.mix is None or options.optimize.prunes:
        return
    from converter.mix import check_before_writing

    specs = prepare(source, checkpoint).tensors
    check_before_writing(specs, options.mix, options.quantize.tensor_types)


def _optimize(job: _Job, timings: Timings, say: Say) -> "Optimized | None":
    """Calibrate, prune, heal and compute the importance matrix, when the options ask."""
    if not job.options.needs_torch:
        return None
    from converter.optimize.run import optimize

    return optimize(
        job.checkpoint,
        job.options.optimize,
        imatrix=job.options.wants_imatrix,
        progress=job.options.show_progress,
        timings=timings,
        say=say,
    )


def _check_pruning(
    job: _Job, optimized: "Optimized | None", timings: Timings
) -> "PruneCheck | None":
    """The pruned file against plain types of the unpruned model (converter.dominance)."""
    if optimized is None or optimized.record.pruning is None:
        return None
    from converter.dominance import check_pruned
    from converter.optimize.calibrate import read_calibration_text

    text = read_calibration_text(job.options.optimize.calibration)
    with timings.step("prune check"):
        unpruned = prepare(job.source, job.checkpoint)
        return check_pruned(job.output, job.quant, unpruned, optimized.unpruned_imatrix, text)


def _plan(job: _Job, timings: Timings) -> "OffloadPlan | None":
    """Plan GPU offload for the written file and store the plan in it."""
    if job.options.offload is None:
        return None
    from converter.offload import record_plan

    with timings.step("plan"):
        return record_plan(job.output, job.options.offload.gpu_memory, job.options.offload.ctx)


def _evaluate(job: _Job, optimized: "Optimized | None", timings: Timings) -> Evaluation | None:
    """Perplexity on the held-out text and decode speed, unpruned against pruned."""
    if not job.options.evaluate:
        return None
    from converter import evaluate

    text = evaluate.DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    with timings.step("evaluate"):
        after = evaluate.evaluate(job.output, text)
        if optimized is None or optimized.record.pruning is None:
            return Evaluation(before=after, after=after)
        # The unpruned model at the same quantization, written aside, scored on the same text.
        with temporary_dir(job.output.parent, "unpruned") as folder:
            path = folder / "unpruned.gguf"
            prepared = prepare(job.source, job.checkpoint)
            write_output(prepared, path, job.quant, optimized.unpruned_imatrix, job.options)
            before = evaluate.evaluate(path, text)
    return Evaluation(before=before, after=after)


def build_report(
    job: _Job,
    written: Written,
    timings: Timings,
    optimized: "Optimized | None",
    offload: "OffloadPlan | None",
    evaluation: Evaluation | None,
    choice: _Choice | None = None,
) -> Report:
    """The report, once, from what each step returned."""
    types = tensor_types_by_name(job.output)
    parameter_count = sum(int(np.prod(spec.shape)) for spec in written.prepared.tensors)
    sizes = {"source weights": job.checkpoint.weight_bytes()}
    if written.float_bytes is not None:
        sizes["float gguf"] = written.float_bytes
    sizes["output"] = job.output.stat().st_size
    parameters = None
    if optimized is not None:
        before = sum(int(np.prod(info.shape)) for _, info in job.checkpoint.items())
        parameters = Change(before, parameter_count)
    return Report(
        source=job.source.spec,
        architecture=job.checkpoint.architecture,
        gguf_architecture=written.prepared.architecture.gguf_arch_name,
        output=str(job.output),
        quant=choice.quant if choice else job.quant,
        tensor_count=len(types),
        parameter_count=parameter_count,
        types_by_kind=types_by_kind(types),
        sizes=sizes,
        timings_s={**timings, "total": round(sum(timings.values()), 3)},
        vocab=written.vocab,
        offload=offload,
        optimization=optimized.record if optimized else None,
        parameters=parameters,
        evaluation=evaluation,
        mix=choice.mix if choice else None,
        fastest=choice.fastest if choice else None,
    )


def check_output(output: Path) -> Path:
    """The output must be a file path in an existing folder this process can write."""
    import tempfile

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
