"""``python -m benchmarks``: run every benchmark script in this folder in turn (``make bench``)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    only = set(sys.argv[1:])
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"\n=== benchmarks/{script.name} ===", flush=True)
        saved = sys.argv
        sys.argv = [str(script)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"benchmarks/{script.name} exited with {exc.code}", file=sys.stderr)
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
