"""Run every benchmark in bench/ (each `*_bench.py` module's `main()`), one after another.

Usage: `python bench/run.py [NAME ...]`, where a NAME keeps only the benchmarks whose module name
contains it (`python bench/run.py convert`). `make bench` runs them all. Each runs with its own
defaults; run a module directly to pass it options. Exits non-zero when any benchmark failed.
"""

import importlib.util
import inspect
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))


def discover(filters: list[str]) -> list[Path]:
    """The benchmark modules, sorted by name, kept when any filter is part of the name."""
    found = sorted(BENCH_DIR.glob("*_bench.py"))
    return [p for p in found if not filters or any(f in p.stem for f in filters)]


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(path: Path) -> bool:
    """Import the module and call its main() with no arguments; True when it succeeded."""
    print(f"\n{'=' * 100}\n{path.stem}\n{'=' * 100}", flush=True)
    start = time.perf_counter()
    try:
        main = load(path).main
        # main(argv=None) would read run.py's own arguments: give it an empty list instead.
        code = main([]) if inspect.signature(main).parameters else main()
    except SystemExit as exc:
        code = exc.code
    except Exception:  # noqa: BLE001 - report it and go on with the next benchmark
        traceback.print_exc()
        code = 1
    ok = code in (None, 0)
    status = "ok" if ok else f"FAILED ({code})"
    print(f"-- {path.stem}: {status} in {time.perf_counter() - start:.1f}s")
    return ok


def main(argv: list[str] | None = None) -> int:
    filters = sys.argv[1:] if argv is None else argv
    paths = discover(filters)
    if not paths:
        print(f"no benchmark matches {filters}; have: {[p.stem for p in discover([])]}")
        return 2
    failed = [p.stem for p in paths if not run_one(p)]
    print(
        f"\n{len(paths) - len(failed)}/{len(paths)} benchmarks ok"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
