"""The torch half of a conversion: calibrate, prune, heal, and the importance matrix.

Runs between loading the checkpoint and writing the GGUF when the options ask for pruning,
healing or an importance matrix (on by default below 8 bits). Everything the user can get wrong
(ratios, block counts, calibration text) is checked before any output is written.
"""

import copy
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.errors import ConverterError

if TYPE_CHECKING:
    from converter.checkpoint import Checkpoint
    from converter.pipeline import ConvertOptions
    from converter.report import Timings

HIGH_PRECISION = frozenset({"F32", "F16", "BF16", "Q8_0"})  # no importance matrix needed
# Quantizing alone needs only the importance matrix, and 24 windows (12k tokens) spread over
# the calibration text give it (like llama-imatrix --chunks): perplexity within noise of the
# whole 53k-token corpus, in a quarter of the time. Pruning, the refit and healing use it all.
IMATRIX_ONLY_WINDOWS = 24


@dataclass
class Optimized:
    """A checkpoint ready to write, its importance matrix, and what the torch steps learned."""

    checkpoint: "Checkpoint"
    imatrix: dict | None  # GGUF names, for the written model
    unpruned_imatrix: dict | None = None  # HF names, for the unpruned model
    info: dict[str, Any] = field(default_factory=dict)


def pruning_requested(options: "ConvertOptions") -> bool:
    return bool(options.prune_layers or options.prune_ffn or options.prune_heads or options.prune)


def wants_imatrix(options: "ConvertOptions") -> bool:
    """On by default when quantizing below 8 bits; --no-imatrix turns it off."""
    return options.use_imatrix and options.quant.upper() not in HIGH_PRECISION


def wanted(options: "ConvertOptions") -> bool:
    """Whether the conversion needs the torch model at all."""
    return pruning_requested(options) or options.heal_steps > 0 or wants_imatrix(options)


def check_options(options: "ConvertOptions", config: dict) -> None:
    """Refuse impossible requests from the config alone, before loading any weights."""
    n_layers = int(config.get("num_hidden_layers") or 0)
    if options.prune_layers and not 0 <= options.prune_layers < n_layers:
        raise ConverterError(
            f"--prune-layers {options.prune_layers}: the model has {n_layers} blocks; "
            f"remove between 0 and {n_layers - 1}"
        )
    if options.prune and not 0.0 < options.prune <= 0.9:
        raise ConverterError(f"--prune {options.prune}: give a ratio above 0 and at most 0.9")
    if options.prune and (options.prune_layers or options.prune_ffn or options.prune_heads):
        raise ConverterError("--prune plans by itself: leave out --prune-layers/-ffn/-heads")
    if not 0.0 <= options.prune_ffn < 1.0:
        raise ConverterError(f"--prune-ffn {options.prune_ffn}: give a ratio from 0 to below 1")
    if options.heal_steps < 0:
        raise ConverterError(f"--heal-steps {options.heal_steps}: give a number of steps >= 0")
    if options.heal_steps and not pruning_requested(options):
        raise ConverterError("--heal-steps recovers from pruning: add a --prune option")


def optimize(
    checkpoint: "Checkpoint",
    options: "ConvertOptions",
    timings: "Timings",
    say: Callable[[str], None],
) -> Optimized:
    """Calibrate, then prune and heal as asked; the importance matrix of the final model."""
    from converter.optimize.calibrate import calibrate, read_calibration_text, token_windows

    check_options(options, checkpoint.config)
    text = read_calibration_text(options.calibration)
    with timings.step("calibrate"):
        model, tokenizer = load_torch_model(checkpoint, options.device)
        windows = token_windows(tokenizer, text)
        if not pruning_requested(options):
            windows = spread(windows, IMATRIX_ONLY_WINDOWS)
        stats = calibrate(model, windows)
    result = Optimized(checkpoint, None, stats.imatrix, {"calibration_tokens": stats.n_tokens})
    imatrix = stats.imatrix
    if pruning_requested(options):
        imatrix = _prune_and_heal(model, stats, windows, checkpoint, options, timings, say, result)
    if wants_imatrix(options):
        from converter.architectures import architecture_for
        from converter.optimize.calibrate import gguf_imatrix

        result.imatrix = gguf_imatrix(imatrix, architecture_for(result.checkpoint))
    return result


def spread(windows: list, count: int) -> list:
    """At most `count` windows, evenly spaced, so that every calibration file is represented."""
    if len(windows) <= count:
        return windows
    return [windows[i * len(windows) // count] for i in range(count)]


def _prune_and_heal(model, stats, windows, checkpoint, options, timings, say, result):
    """Plan (printed before it runs), refit the pruned widths, apply, heal; returns the pruned
    model's imatrix."""
    from converter.optimize.run import prune
    from converter.optimize.run import prune_auto
    from converter.optimize.calibrate import collect_imatrix
    from converter.optimize.heal import heal
    from converter.optimize.refit import refit_plan

    with timings.step("plan"):
        if options.prune:
            plan, candidates = prune_auto.auto_plan(model, stats, windows, options.prune)
            say("automatic plan candidates (calibration loss before healing):")
            say(prune_auto.candidates_table(candidates, plan))
        else:
            plan = prune.make_plan(
                model,
                stats,
                layers=options.prune_layers,
                ffn_ratio=options.prune_ffn,
                heads=options.prune_heads,
                per_layer=options.per_layer,
            )
    say(plan.table())
    teacher = copy.deepcopy(model) if options.heal_steps else None
    with timings.step("prune"):
        refit_plan(model, plan, windows)
        prune.apply_plan(model, plan)
    result.info["plan"] = [vars(lp) for lp in plan.layers]
    result.info["block_parameters"] = {"before": plan.params_before, "after": plan.params_after}
    if teacher is not None:
        with timings.step("heal"):
            healed = heal(model, teacher, windows, steps=options.heal_steps,
                          progress=options.show_progress)  # fmt: skip
        del teacher
        result.info["heal"] = {"steps": healed.steps, "kl_first": healed.first_loss,
                               "kl_last": healed.last_loss}  # fmt: skip
    result.checkpoint = prune.pruned_checkpoint(model, checkpoint.config, checkpoint.tokenizer_dir)
    with timings.step("imatrix"):
        return collect_imatrix(model, windows) if wants_imatrix(options) else {}


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


def compare_before(
    checkpoint: "Checkpoint", options: "ConvertOptions", imatrix: dict | None, text: str
) -> dict[str, Any]:
    """The unpruned model at the same quantization, evaluated on the same text, for the report."""
    from converter import evaluate
    from converter.architectures import architecture_for
    from converter.optimize.calibrate import gguf_imatrix
    from converter.pipeline import convert_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "unpruned.gguf"
        if imatrix and wants_imatrix(options):
            imatrix = gguf_imatrix(imatrix, architecture_for(checkpoint))
        plain = replace(options, imatrix=imatrix or None, report_path=None)
        convert_checkpoint(checkpoint, path, plain)
        return evaluate.evaluate(path, text).to_dict()


def convert_optimized(
    checkpoint: "Checkpoint",
    output: Path,
    options: "ConvertOptions",
    *,
    source=None,
    timings: "Timings",
):
    """convert_checkpoint with the torch steps first and their findings in the report."""
    from converter.pipeline import convert_checkpoint

    say = options.say or (lambda _line: None)
    done = optimize(checkpoint, options, timings, say)
    written = replace(options, imatrix=done.imatrix, report_path=None)
    result = convert_checkpoint(done.checkpoint, output, written, source=source, timings=timings)
    result.report.sizes["source weights"] = checkpoint.weight_bytes()
    extra = result.report.extra
    extra["optimize"] = done.info
    extra["imatrix"] = done.imatrix is not None
    extra["parameters"] = {
        "before": sum(math.prod(info.shape) for _, info in checkpoint.items()),
        "after": result.report.parameter_count,
    }
    if options.evaluate:
        extra["evaluation"] = _evaluation(checkpoint, output, options, done, timings)
    result.report.timings_s.pop("total", None)
    result.report.timings_s["total"] = round(sum(result.report.timings_s.values()), 3)
    if options.report_path is not None:
        result.report.write_json(Path(options.report_path))
    return result


def _evaluation(checkpoint, output, options, done: Optimized, timings) -> dict[str, Any]:
    """Perplexity on the held-out text and decode speed, unpruned against pruned."""
    from converter import evaluate

    text = evaluate.DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    with timings.step("evaluate"):
        after = evaluate.evaluate(output, text).to_dict()
        before = after
        if pruning_requested(options):
            before = compare_before(checkpoint, options, done.unpruned_imatrix, text)
    return {"before": before, "after": after}


def format_summary(extra: dict[str, Any]) -> str:
    """Before/after lines for the printed report: parameters, file size, perplexity, speed."""
    lines = []
    params = extra.get("parameters")
    blocks = extra.get("optimize", {}).get("block_parameters")
    if params:
        lines.append(f"  parameters {params['before']:,} -> {params['after']:,}")
    if blocks:
        lines.append(f"  block parameters {blocks['before']:,} -> {blocks['after']:,}")
    lines.append(f"  importance matrix: {'yes' if extra.get('imatrix') else 'no'}")
    evaluation = extra.get("evaluation")
    if evaluation:
        for when in ("before", "after"):
            e = evaluation[when]
            lines.append(
                f"  {when:<6} size {e['file_bytes'] / 1e6:.1f} MB, perplexity "
                f"{e['perplexity']['value']:.3f}, decode {e['tokens_per_s']:.1f} tokens/s"
            )
    return "\n".join(lines)
