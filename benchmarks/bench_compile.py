"""Cold vs warm persistent compilation cache: the same experiment run twice, in fresh processes.

    python benchmarks/bench_compile.py [--experiment sweep_depth] [-- extra flags]

Run 1 starts from an empty cache folder (every program compiles), run 2 reuses it. Prints both
wall times (whole process: imports, data, compile, train, measure, figures), their ratio, the
cache size, and whether results.json is byte-identical. Prints, never asserts.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(experiment: str, workdir: Path, cache: Path, extra: list[str]) -> float:
    env = dict(os.environ, PNC_COMPILATION_CACHE=str(cache))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"experiments.{experiment}", "--workdir", str(workdir),
                    "--no-progress", *extra], env=env, check=True, stdout=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="sweep_depth")
    parser.add_argument("extra", nargs="*", help="flags passed to the experiment (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache = tmp_path / "cache"
        cold = run(args.experiment, tmp_path / "cold", cache, args.extra)
        warm = run(args.experiment, tmp_path / "warm", cache, args.extra)
        same = ((tmp_path / "cold/results.json").read_bytes()
                == (tmp_path / "warm/results.json").read_bytes())
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        print(f"{args.experiment} {' '.join(args.extra)}: cold {cold:.1f} s, warm {warm:.1f} s, "
              f"cold / warm = {cold / warm:.2f}x; cache {size / 1e6:.1f} MB in "
              f"{sum(1 for _ in cache.rglob('*'))} files; results.json identical: {same}")


if __name__ == "__main__":
    main()
