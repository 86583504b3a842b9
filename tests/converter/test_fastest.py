"""--fastest-within on a tiny model, and the frontier logic it and the --prune check share.

The conversion builds every candidate for real (plain types, pure files, mixes), measures them
on the calibration hold-out and for speed here, and must write the fastest file within PCT% of
F16's perplexity, print the frontier and why, and record it all in the report. Pruning runs the
dominance check: the report always holds it, and the CLI warns exactly when a plain type of the
unpruned model beats the pruned file on both counts.
"""

import json
from pathlib import Path

import pytest

from converter.dominance import PruneCheck
from converter.fastest import choose
from converter.frontier import Row, Speed, mark_frontier
from tests.converter.test_bad_input import run_cli
from tests.tiny_models import tiny_model

TINY = "llama-spm"


def _row(tmp_path: Path, name: str, ppl: float, tps: float) -> Row:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(b"x" * 10)
    return Row(name, path, "plain", perplexity=ppl, speed=Speed(tps, 10 * tps, 1000 / tps))


def test_frontier_and_choice(tmp_path):
    rows = [
        _row(tmp_path, "F16", 10.0, 50),
        _row(tmp_path, "A", 10.2, 80),  # within 5%: 10.5
        _row(tmp_path, "B", 10.4, 90),  # within, fastest of those within
        _row(tmp_path, "C", 12.0, 120),  # fastest, but over the limit
        _row(tmp_path, "D", 10.6, 70),  # dominated by A and B
    ]
    mark_frontier(rows)
    assert [r.name for r in rows if r.on_frontier] == ["F16", "A", "B", "C"]
    best, record = choose(rows, 5)
    assert best.name == "B" == record.chosen
    assert record.limit == pytest.approx(10.5)
    assert "C 12.000" in record.reason and "over the limit" in record.reason
    assert "*" in record.table.splitlines()[3]  # B's line is marked on the frontier
    best, _ = choose(rows, 25)
    assert best.name == "C"


def test_prune_check_names_dominating_rivals():
    pruned = {"name": "pruned Q4_K_M", "perplexity": 26.0, "decode_tps": 120.0}
    rival = {"name": "unpruned IQ4_XS", "perplexity": 19.8, "decode_tps": 146.0}
    check = PruneCheck([pruned, rival], ["unpruned IQ4_XS"])
    assert "did not pay" in check.message and "146.0 vs 120.0" in check.message
    assert "on the frontier" in PruneCheck([pruned, rival], []).message


@pytest.fixture(scope="module")
def fastest_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fastest")
    out, report = folder / "fast.gguf", folder / "fast.json"
    result = run_cli(
        tiny_model(TINY), "-o", out, "--fastest-within", "5", "--report", report, timeout=900
    )
    assert result.returncode == 0, result.stderr
    return out, json.loads(report.read_text()), result.stdout


def test_fastest_within_writes_the_fastest_good_enough_file(fastest_run):
    out, report, stdout = fastest_run
    record = report["extra"]["fastest"]
    rows = {r["name"]: r for r in record["candidates"]}
    f16 = rows["F16"]
    assert record["reference_perplexity"] == pytest.approx(f16["perplexity"], rel=1e-6)
    limit = f16["perplexity"] * 1.05
    within = [r for r in rows.values() if r["perplexity"] <= limit]
    chosen = rows[record["chosen"]]
    assert chosen in within
    assert chosen["decode_tps"] == max(r["decode_tps"] for r in within)
    assert out.stat().st_size == chosen["file_bytes"]  # the output is that very file
    assert report["quant"] == record["chosen"]
    kinds = {r["kind"] for r in rows.values()}
    assert kinds == {"float", "plain", "pure", "mix"}
    assert any(r["on_frontier"] for r in rows.values())
    assert "calibration hold-out" in record["measured_on"]
    assert f"fastest: {record['chosen']}" in stdout  # why, printed
    assert "on the frontier" in stdout and "Q4_K_M" in stdout  # the frontier it saw


def test_prune_reports_whether_it_paid(tmp_path):
    out, report = tmp_path / "pruned.gguf", tmp_path / "pruned.json"
    result = run_cli(
        tiny_model(TINY), "-o", out, "--prune-layers", "1", "--prune-ffn", "0.25",
        "--report", report, "-q", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    check = json.loads(report.read_text())["extra"]["prune_check"]
    names = [r["name"] for r in check["rows"]]
    assert names[0] == "pruned Q4_K_M" and "unpruned IQ4_XS" in names
    pruned = check["rows"][0]
    beaten_by = [
        r["name"]
        for r in check["rows"][1:]
        if r["decode_tps"] > pruned["decode_tps"] and r["perplexity"] < pruned["perplexity"]
    ]
    assert check["dominated_by"] == beaten_by
    warned = "warning: pruning did not pay" in result.stderr
    assert warned == bool(beaten_by), result.stderr
