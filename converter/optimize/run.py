"""The torch half of a conversion: calibrate, prune, refit, heal, and the importance matrix.

converter.pipeline runs it between loading the checkpoint and writing the GGUF when the options
ask for pruning, healing or an importance matrix (on by default below 8 bits). It takes a
checkpoint and returns a checkpoint (pruned, or the same) plus what it learned; it never writes
a file and never calls back into the pipeline. The options were checked by converter.options.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from converter.errors import ConverterError
from converter.options import OptimizeOptions
from converter.report import Change, HealRecord, Optimization, Pruning, Timings

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from converter.checkpoint import Checkpoint
    from converter.optimize.calibrate import CalibrationStats

Say = Callable[[str], None]
Imatrix = dict[str, "np.ndarray"]


@dataclass
class Optimized:
    """A checkpoint ready to write, its importance matrices (GGUF names) and the record."""

    checkpoint: "Checkpoint"
    imatrix: Imatrix | None  # for the written model
    unpruned_imatrix: Imatrix | None  # for the unpruned model, when evaluated beside it
    record: Optimization


@dataclass(frozen=True)
class _Run:
    """How this run goes: the options, whether an imatrix is wanted, where progress goes."""

    options: OptimizeOptions
    imatrix: bool
    progress: bool
    timings: Timings
    say: Say


@dataclass
class _Pruned:
    """What pruning and healing made of the torch model."""

    checkpoint: "Checkpoint"
    imatrix: Imatrix | None  # HF names, of the pruned (and healed) model, when wanted
    pruning: Pruning


def optimize(
    checkpoint: "Checkpoint",
    options: OptimizeOptions,
    *,
    imatrix: bool,
    progress: bool,
    timings: Timings,
    say: Say,
) -> Optimized:
    """Calibrate, then prune and heal as asked; the importance matrix of the final model."""
    from converter.optimize.calibrate import (
        IMATRIX_ONLY_WINDOWS,
        calibrate,
        read_calibration_text,
        spread,
        token_windows,
    )

    if options.prunes:
        check_prunable(checkpoint)
    run = _Run(options, imatrix, progress, timings, say)
    text = read_calibration_text(options.calibration)
    with timings.step("calibrate"):
        model, tokenizer = load_torch_model(checkpoint, options.device)
        windows = token_windows(tokenizer, text)
        if not options.prunes:
            windows = spread(windows, IMATRIX_ONLY_WINDOWS)
        stats = calibrate(model, windows)
    pruned = _prune_and_heal(model, stats, windows, checkpoint, run) if options.prunes else None
    record = Optimization(stats.n_tokens, imatrix, pruned.pruning if pruned else None)
    if pruned is None:
        written = gguf_names(stats.imatrix, checkpoint) if imatrix else None
        return Optimized(checkpoint, written, written, record)
    written = gguf_names(pruned.imatrix, pruned.checkpoint) if pruned.imatrix else None
    unpruned = gguf_names(stats.imatrix, checkpoint) if imatrix else None
    return Optimized(pruned.checkpoint, written, unpruned, record)


def check_prunable(checkpoint: "Checkpoint") -> None:
    """Pruning rewrites Llama-style blocks; other layouts are refused before any work."""
    from converter.architectures import architecture_for, prunable

    if not architecture_for(checkpoint).prunable:
        able = prunable()
        raise ConverterError(
            f"pruning does not support {checkpoint.architecture} (only {', '.join(able)}); "
            "convert it without the --prune options"
        )


def gguf_names(imatrix: Imatrix, checkpoint: "Checkpoint") -> Imatrix:
    """An importance matrix keyed by the GGUF tensor names of `checkpoint`'s writer."""
    from converter.architectures import architecture_for
    from converter.optimize.calibrate import gguf_imatrix

    return gguf_imatrix(imatrix, architecture_for(checkpoint))


def _prune_and_heal(
    model: "nn.Module",
    stats: "CalibrationStats",
    windows: list["torch.Tensor"],
    checkpoint: "Checkpoint",
    run: _Run,
) -> _Pruned:
    """Plan (printed before it runs), refit the pruned widths, apply, heal; the pruned model
    as a checkpoint with its importance matrix and the record of what was done."""
    from converter.optimize import prune
    from converter.optimize.calibrate import collect_imatrix
    from converter.optimize.heal import heal
    from converter.optimize.refit import refit_plan

    options, timings = run.options, run.timings
    with timings.step("prune plan"):
        plan = _plan(model, stats, windows, options, run.say)
    run.say(plan.table())
    teacher = copy.deepcopy(model) if options.heal_steps else None
    with timings.step("prune"):
        refit_plan(model, plan, windows)
        prune.apply_plan(model, plan)
    healed = None
    if teacher is not None:
        with timings.step("heal"):
            result = heal(model, teacher, windows, steps=options.heal_steps, progress=run.progress)
        del teacher
        healed = HealRecord(result.steps, result.first_loss, result.last_loss)
    pruned = prune.pruned_checkpoint(model, checkpoint.config, checkpoint.tokenizer_dir)
    with timings.step("imatrix"):
        imatrix = collect_imatrix(model, windows) if run.imatrix else None
    blocks = Change(plan.params_before, plan.params_after)
    return _Pruned(pruned, imatrix, Pruning(list(plan.layers), blocks, healed))


def _plan(model, stats, windows, options: OptimizeOptions, say: Say):
    """The automatic plan (its candidates printed) or the one the flags describe."""
    from converter.optimize import prune, prune_auto

    if options.prune:
        plan, candidates = prune_auto.auto_plan(model, stats, windows, options.prune)
        say("automatic plan candidates (calibration loss before healing):")
        say(prune_auto.candidates_table(candidates, plan))
        return plan
    return prune.make_plan(
        model,
        stats,
        layers=options.prune_layers,
        ffn_ratio=options.prune_ffn,
        heads=options.prune_heads,
        per_layer=options.per_layer,
    )


def load_torch_model(checkpoint: "Checkpoint", device_name: str):
    """The HF model (on the chosen device and dtype) and tokenizer of a checkpoint folder."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from converter.optimize.device import dtype_for, resolve_device

    device = resolve_device(device_name)
    folder = checkpoint.tokenizer_dir
    transformers.utils.logging.set_verbosity_error()  # the CLI's output stays ours
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype_for(device), use_safetensors=not _is_pickle(checkpoint)
        )
    except (OSError, ValueError) as exc:
        raise ConverterError(f"transformers cannot load {folder} for calibration: {exc}") from exc
    torch.manual_seed(0)
    return model.to(device).eval(), tokenizer


def _is_pickle(checkpoint: "Checkpoint") -> bool:
    return any(p.suffix == ".bin" for p in checkpoint.weight_files)
