"""Each command's --help lists exactly the options that command reads (and `stats` counts right).

What each command reads is written out here, from the commands' code, so a shared option added
to a command that does not use it (or removed from one that does) fails this test.
"""

import argparse
import re

import pytest

from chatbot.cli.commands import COMMANDS, cmd_stats
from chatbot.cli.options import build_parser
from chatbot.store.records import TurnRecord

MODEL_AND_STORAGE = {
    "--model",
    "--db",
    "--system",
    "--faq",
    "--faq-confidence",
    "--handoff-reply",
    "--faq-answer",
    "--server",
    "--server-proxy",
    "--server-api-key",
    "--ctx",
    "--threads",
    "--gpu-layers",
    "--flash-attn",
}
READS = {
    "ask": {"--conversation", "--json", "--temperature", "--max-tokens", "--seed"}
    | MODEL_AND_STORAGE,
    "history": {"--search", "--json", "--db"},
    "export": {"--format", "--db"},
    "stats": {"--json", "--db"},
    "handoffs": {"--json", "--open", "--resolve", "--reply", "--db"},
    "faq-eval": {"--json", "--faq", "--faq-confidence", "--handoff-reply"},
    "serve": {
        "--host",
        "--port",
        "--api-key",
        "--parallel",
        "--queue",
        "--max-tokens",
        "--cors-origin",
    }
    | MODEL_AND_STORAGE,
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return dict(action.choices)


def listed_options(help_text: str) -> set[str]:
    """The long options the help's option lines name (`--x`, `--x/--no-x` as `--x`)."""
    found = set()
    for line in help_text.splitlines():
        match = re.match(r"\s+(--[a-z][a-z-]*)", line)
        if match:
            found.add(match.group(1))
    return found - {"--help"}


def test_every_command_is_checked():
    assert set(subcommands()) == set(READS) == {c for c in COMMANDS if c is not None}


@pytest.mark.parametrize("command", sorted(READS))
def test_help_lists_only_the_options_the_command_reads(command):
    listed = listed_options(subcommands()[command].format_help())
    assert listed == READS[command], (
        f"unused: {sorted(listed - READS[command])}, missing: {sorted(READS[command] - listed)}"
    )


def test_history_help_has_no_model_option_and_refuses_one_after_its_name(capsys):
    help_text = subcommands()["history"].format_help()
    assert "--model" not in help_text and "--gpu-layers" not in help_text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["history", "--model", "m.gguf"])
    assert "unrecognized arguments: --model" in capsys.readouterr().err
    args = build_parser().parse_args(["--model", "m.gguf", "history"])  # before the name: kept
    assert str(args.model) == "m.gguf"


def test_stats_says_1_turn(store, capsys):
    cid = store.new_conversation("x").id
    store.add_turn(
        TurnRecord(
            conversation_id=cid, message_id=None, prompt_tokens=5, cached_tokens=0,
            completion_tokens=3, ttft_ms=10.0, decode_tps=20.0, total_ms=50.0,
            cpu_seconds=0.1, model_file="m.gguf", quantization="Q4_K_M", threads=1,
            stop_reason="stop",
        )
    )  # fmt: skip
    cmd_stats(argparse.Namespace(json=False), store)
    assert "m.gguf (Q4_K_M): 1 turn\n" in capsys.readouterr().out
