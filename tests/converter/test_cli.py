"""The converter CLI: help for every command, `info` on a real converted file, JSON report."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from converter.cli.commands import SUBCOMMANDS, build_parser
from converter.quantize import ALL_TYPES
from tests.tiny_models import tiny_model


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converter", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_top_level_help_lists_commands_and_quant_types():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout
    assert all(quant in result.stdout for quant in ALL_TYPES)


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: converter {command}" in result.stdout
    parser = _subparser(command)
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{command}: {action.dest} has no help text"


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def test_convert_help_explains_options():
    out = run_cli("convert", "--help").stdout
    for option in ("--output", "--quant", "--report", "--allow-pickle", "weights_only"):
        assert option in out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model converted through the CLI with a JSON report."""
    folder = tmp_path_factory.mktemp("cli")
    out, report = folder / "tiny.gguf", folder / "report.json"
    result = run_cli(tiny_model("qwen2"), "-o", out, "--quant", "Q8_0", "--report", report)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    return out, report


def test_report_json(converted):
    out, report_path = converted
    report = json.loads(report_path.read_text())
    assert report["architecture"] == "Qwen2ForCausalLM"
    assert report["gguf_architecture"] == "qwen2"
    assert report["quant"] == "Q8_0"
    assert report["sizes"]["output"] == out.stat().st_size
    assert report["types_by_kind"]["attn_q.weight"] == {"Q8_0": 2}
    assert report["types_by_kind"]["attn_q.bias"] == {"F32": 2}
    assert report["tensor_count"] == sum(report_counts(report))
    assert {"load", "write", "quantize", "total"} <= set(report["timings_s"])


def report_counts(report: dict) -> list[int]:
    return [n for types in report["types_by_kind"].values() for n in types.values()]


def test_info_table(converted):
    out, _ = converted
    result = run_cli("info", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "qwen2" in text and "Q8_0" in text
    assert "gpt2 (pre: qwen2)" in text
    assert "chat template  yes" in text


def test_info_json_shows_project_keys(converted, tmp_path):
    """Keys in the project's own `chatbot.` namespace are listed; others are not."""
    out, _ = converted
    copy = tmp_path / "with-keys.gguf"
    reader = gguf.GGUFReader(out)
    writer = gguf.GGUFWriter(copy, "qwen2")
    writer.add_uint32("chatbot.test.layers", 7)
    writer.add_string("other.key", "x")
    for tensor in reader.tensors:
        writer.add_tensor(
            tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = json.loads(run_cli("info", copy, "--json").stdout)
    assert info["project_keys"] == {"chatbot.test.layers": 7}
    assert info["tensor_count"] == len(reader.tensors)


def test_info_missing_file(tmp_path):
    result = run_cli("info", tmp_path / "none.gguf")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.gguf'} does not exist or is not a file"
    ]
