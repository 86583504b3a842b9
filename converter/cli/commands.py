"""`converter`: argument parsing and error reporting only.

`converter SOURCE -o OUT.gguf` is shorthand for `converter convert SOURCE -o OUT.gguf`.
Each subcommand is a builder in SUBCOMMANDS that adds its parser and sets a handler; adding a
subcommand is adding one decorated builder. Every ConverterError becomes one line
`error: ...` on stderr with exit code 2; Ctrl-C exits 130 and leaves no output file.
"""

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from converter.cli.optimize_args import (
    add_optimize_arguments,
    fastest_within,
    mix_target,
    optimize_options,
    quantize_options,
)
from converter.errors import ConverterError
from converter.gguf_keys import CHAT_CTX
from converter.options import ConvertOptions, OffloadOptions, check_ctx
from converter.paths import DEFAULT_QUANT

Builder = Callable[[argparse._SubParsersAction], None]
SUBCOMMANDS: dict[str, Builder] = {}


def subcommand(name: str) -> Callable[[Builder], Builder]:
    """Register a builder that adds the `name` subparser (with `handler` in its defaults)."""

    def register(builder: Builder) -> Builder:
        SUBCOMMANDS[name] = builder
        return builder

    return register


_QUANT_LIST = "{quant_types}"


class _Parser(argparse.ArgumentParser):
    """Fills the quantization-type list into epilogs only when help is printed: the list
    comes from converter.quantize, which loads llama.cpp, and `converter info` needs none."""

    def format_help(self) -> str:
        if self.epilog and _QUANT_LIST in self.epilog:
            from converter.quantize import ALL_TYPES

            self.epilog = self.epilog.replace(_QUANT_LIST, ", ".join(ALL_TYPES))
        return super().format_help()


@subcommand("convert")
def _convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint to a quantized GGUF (the default command)",
        description="Convert a Hugging Face causal LM (a local checkpoint folder or a hub id "
        "such as HuggingFaceTB/SmolLM2-135M-Instruct) into a GGUF file for llama.cpp.",
        epilog=f"quantization types: {_QUANT_LIST}",
    )
    parser.add_argument("source", help="checkpoint folder (with config.json) or hub id owner/name")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the GGUF file to write")
    parser.add_argument(
        "--quant",
        default=DEFAULT_QUANT,
        metavar="TYPE",
        help=f"output type: F32/F16/BF16 are written directly, the rest by llama.cpp's "
        f"quantizer (default {DEFAULT_QUANT}; the list is below)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="R.json", help="also write a JSON report here"
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept pytorch_model.bin pickle weights (loaded with torch.load(weights_only=True)); "
        "without it only safetensors are read",
    )
    parser.add_argument("--threads", type=int, help="quantizer threads (default: every core)")
    _add_plan_options(parser, required=False)
    add_optimize_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no table")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from converter.pipeline import convert

    gpu_memory = _gpu_memory(args)
    options = ConvertOptions(
        quant=args.quant,
        allow_pickle=args.allow_pickle,
        report_path=args.report,
        show_progress=not args.quiet and sys.stderr.isatty(),
        evaluate=args.evaluate,
        quantize=quantize_options(args),
        optimize=optimize_options(args),
        offload=OffloadOptions(gpu_memory, args.ctx) if gpu_memory is not None else None,
        mix=mix_target(args),
        fastest_within=fastest_within(args),
    )
    result = convert(args.source, args.output, options, say=None if args.quiet else print)
    if not args.quiet:
        print(result.report.format_table())
    check = result.report.prune_check
    if check is not None and check.dominated_by:  # even with -q: the user asked to prune
        print(f"warning: {check.message}", file=sys.stderr)
    print(result.output)
    return 0


def _add_plan_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--gpu-memory",
        required=required,
        metavar="SIZE",
        help="GPU memory to plan offload for, e.g. 8GiB, 512MiB, 8G; the plan (n_gpu_layers, "
        "offload_kqv, flash_attn) is stored in the GGUF for the chatbot",
    )
    parser.add_argument(
        "--ctx",
        type=int,
        default=CHAT_CTX,
        metavar="N",
        help=f"context in tokens the plan sizes the KV cache for (default {CHAT_CTX}, the "
        "chatbot's own)",
    )


def _gpu_memory(args: argparse.Namespace) -> int | None:
    from converter.offload import parse_size

    check_ctx(args.ctx)  # before converting, not after
    return parse_size(args.gpu_memory) if args.gpu_memory is not None else None


@subcommand("plan")
def _plan_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan GPU offload of a GGUF for a card (without converting again)",
        description="Bytes per block, output layer, KV cache and compute buffer from the "
        "GGUF's own tensor table, and the n_gpu_layers / offload_kqv / flash_attn that fit.",
    )
    parser.add_argument("file", type=Path, help="the .gguf file")
    _add_plan_options(parser, required=True)
    parser.add_argument(
        "--write", action="store_true", help="store the plan in the file's metadata (atomically)"
    )
    parser.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from converter.offload import format_plan, plan_file, write_plan_metadata

    plan = plan_file(args.file, _gpu_memory(args), args.ctx)
    print(format_plan(plan))
    if args.write:
        write_plan_metadata(args.file, args.file, plan)
        print(f"plan stored in {args.file}")
    return 0


@subcommand("info")
def _info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show what is inside a GGUF file",
        description="Architecture, size, tensor types, tokenizer, chat template and this "
        "project's own chatbot.* keys of a GGUF file.",
    )
    parser.add_argument("file", type=Path, help="the .gguf file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from converter.info import format_info, read_summary

    summary = read_summary(args.file)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_info(summary))
    return 0


@subcommand("default")
def _default_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "default",
        help="build the default model (SmolLM2-135M-Instruct) if missing and print its path",
        description="Make sure the chatbot's default model exists in the model cache "
        "($CHATBOT_CACHE_DIR or the user cache folder), building it if needed.",
    )
    parser.add_argument(
        "--quant",
        default=DEFAULT_QUANT,
        metavar="TYPE",
        help=f"output type (default {DEFAULT_QUANT})",
    )
    parser.set_defaults(handler=_run_default)


def _run_default(args: argparse.Namespace) -> int:
    from converter.default_model import ensure_default_gguf
    from converter.quantize import check_quant

    print(ensure_default_gguf(check_quant(args.quant)))
    return 0


@subcommand("eval")
def _eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="perplexity and decode speed of a GGUF file",
        description="Perplexity on a text (llama-perplexity style windows) and decode speed "
        "of a GGUF through llama.cpp.",
    )
    parser.add_argument("file", type=Path, help="the .gguf file")
    parser.add_argument(
        "--text", type=Path, help="the text to score (default: data/eval/heldout.txt)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from converter import evaluate

    text_path = args.text or evaluate.DEFAULT_EVAL_TEXT
    try:
        text = Path(text_path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConverterError(
            f"cannot read the evaluation text {text_path}: {exc.strerror or exc}"
        ) from exc
    result = evaluate.evaluate(args.file, text)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        ppl = result.perplexity
        print(
            f"{result.path}: perplexity {ppl.value:.3f} "
            f"({ppl.n_scored} tokens scored, ctx {ppl.ctx}), "
            f"{result.tokens_per_s:.1f} tokens/s decode on {result.n_threads} threads"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="converter",
        description="Turn a Hugging Face causal LM into a quantized GGUF for llama.cpp. "
        "`converter SOURCE -o OUT.gguf [--quant TYPE]` is short for `converter convert ...`.",
        epilog=f"quantization types: {_QUANT_LIST}. Run `converter COMMAND --help` for details.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for builder in SUBCOMMANDS.values():
        builder(subparsers)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like an exception so temp files are removed on the way out."""
    raise SystemExit(128 + signum)


_INTERRUPTED = threading.Event()


def _interrupt(_signum: int, _frame: object) -> None:
    """Ctrl-C, remembered: a library can turn the KeyboardInterrupt raised inside it into an
    error of its own (torch reports a tensor it could not read), which is still an interrupt."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def _interrupted() -> int:
    print("error: interrupted (no output file written)", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "convert")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return _interrupted()
    except ConverterError as exc:
        if _INTERRUPTED.is_set():
            return _interrupted()
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `converter info X | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:
        if _INTERRUPTED.is_set():
            return _interrupted()
        raise


if __name__ == "__main__":
    sys.exit(main())
