"""Bad input through the real CLI: exit code 2, one line naming the problem, no output file.

Also: pickle weights only with --allow-pickle (and then weights_only=True), and a conversion
killed or interrupted half-way never leaves a file at the output path.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_model

TINY = "llama-spm"


def run_cli(
    *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m converter ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "converter", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, a single `error:` line on stderr that names the problem, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def no_outputs(folder: Path) -> bool:
    """Nothing written: no .gguf and no temp files."""
    return not [p for p in folder.iterdir() if p.name.endswith((".gguf", ".partial"))]


@pytest.fixture
def src(tmp_path) -> Path:
    """A private copy of a tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_model(TINY), tmp_path / "src"))


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_missing_folder(tmp_path, out_dir):
    result = run_cli(tmp_path / "no-such-model", "-o", out_dir / "m.gguf")
    assert_one_line_error(result, "no-such-model", "not found")
    assert no_outputs(out_dir)


def test_folder_without_config(src, out_dir):
    (src / "config.json").unlink()
    assert_one_line_error(run_cli(src, "-o", out_dir / "m.gguf"), "config.json")
    assert no_outputs(out_dir)


def test_unsupported_architecture(src, out_dir):
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (src / "config.json").write_text(json.dumps(config))
    result = run_cli(src, "-o", out_dir / "m.gguf")
    assert_one_line_error(result, "unsupported architecture GPT2LMHeadModel", "LlamaForCausalLM")
    assert no_outputs(out_dir)


def _to_pickle(src: Path) -> None:
    state_dict = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    torch.save(state_dict, src / "pytorch_model.bin")


def test_pickle_weights_refused_without_flag(src, out_dir):
    _to_pickle(src)
    result = run_cli(src, "-o", out_dir / "m.gguf", "--quant", "F16")
    assert_one_line_error(result, "pickle", "--allow-pickle")
    assert no_outputs(out_dir)


def test_pickle_weights_convert_with_flag(src, out_dir):
    _to_pickle(src)
    result = run_cli(src, "-o", out_dir / "m.gguf", "--quant", "F16", "--allow-pickle", "-q")
    assert result.returncode == 0, result.stderr
    assert (out_dir / "m.gguf").stat().st_size > 100_000


class _RunsCode:
    """A pickle payload: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_with_code_refused_even_with_flag(src, out_dir):
    (src / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _RunsCode()}, src / "pytorch_model.bin")
    result = run_cli(src, "-o", out_dir / "m.gguf", "--allow-pickle")
    assert_one_line_error(result, "weights_only")
    assert not (Path.cwd() / "pwned.txt").exists()
    assert no_outputs(out_dir)


def test_truncated_safetensors(src, out_dir):
    weights = src / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli(src, "-o", out_dir / "m.gguf"), "model.safetensors", "truncated")
    assert no_outputs(out_dir)


def test_unknown_quant_type(out_dir):
    result = run_cli(tiny_model(TINY), "-o", out_dir / "m.gguf", "--quant", "Q9_9")
    assert_one_line_error(result, "Q9_9", "Q4_K_M")
    assert no_outputs(out_dir)


def test_missing_output_folder(tmp_path):
    result = run_cli(tiny_model(TINY), "-o", tmp_path / "nowhere" / "m.gguf")
    assert_one_line_error(result, "does not exist")


def test_unwritable_output_folder(tmp_path):
    if os.geteuid() == 0:
        folder = Path("/sys")  # root may write anywhere except a read-only kernel folder
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
    result = run_cli(tiny_model(TINY), "-o", folder / "m.gguf")
    assert_one_line_error(result, "cannot write", str(folder))
    assert not (folder / "m.gguf").exists()


@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "."])
def test_output_equal_to_input(src, target):
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    result = run_cli(src, "-o", src / target)
    assert_one_line_error(result, str(src))
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def _start_and_catch(out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start converting the wide model; return once a temp file shows writing has begun.
    Q8_0: written, then quantized, with no calibration pass before the first write."""
    model = tiny_model("llama-wide")
    proc = subprocess.Popen(
        [sys.executable, "-m", "converter", model, "-o", out, "--quant", "Q8_0", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}*.partial")):
        assert proc.poll() is None, f"finished before it could be caught: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return proc


def test_killed_conversion_leaves_no_output(out_dir):
    out = out_dir / "m.gguf"
    proc = _start_and_catch(out)
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists()
    # The next run to the same output finishes and removes the dead run's temp files.
    result = run_cli(tiny_model(TINY), "-o", out, "--quant", "F16", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.gguf"]


def test_killed_conversion_is_cleaned_by_a_later_run_to_another_name(out_dir, tmp_path):
    """SIGKILL runs no cleanup: the next conversion, whatever its output name, removes the
    dead run's temporary files (they are recorded in the ledger under the cache folder)."""
    env = {**os.environ, "CHATBOT_CACHE_DIR": str(tmp_path / "cache")}
    proc = _start_and_catch(out_dir / "killed.gguf", env)
    proc.kill()
    proc.wait(timeout=30)
    left = [p.name for p in out_dir.iterdir()]
    assert left and all(name.endswith(".partial") for name in left)  # what the kill left
    other = tmp_path / "other"
    other.mkdir()
    result = run_cli(tiny_model(TINY), "-o", other / "m.gguf", "--quant", "F16", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert list(out_dir.iterdir()) == []
    assert [p.name for p in other.iterdir()] == ["m.gguf"]
    assert list((tmp_path / "cache" / "partials").iterdir()) == []


def test_ctrl_c_exits_130_and_cleans_up(out_dir):
    out = out_dir / "m.gguf"
    proc = _start_and_catch(out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["error: interrupted (no output file written)"]
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_that_a_library_turns_into_another_error_still_exits_130(monkeypatch, capsys):
    """torch can turn the KeyboardInterrupt raised inside it into its own error ("could not
    determine the shape of object type"), which the reader reports as a tensor it could not
    read: the converter still exits 130, as for any Ctrl-C."""
    from converter.cli import commands as cli
    from converter.errors import ConverterError

    def interrupted_read(_args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises here
        except KeyboardInterrupt:
            raise ConverterError("cannot read tensor model.embed_tokens.weight: ...") from None
        raise AssertionError("no SIGINT arrived")

    monkeypatch.setattr(cli, "_run_info", interrupted_read)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main(["info", "any.gguf"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
        cli._INTERRUPTED.clear()
    assert capsys.readouterr().err == "error: interrupted (no output file written)\n"
