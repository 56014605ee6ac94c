"""Wall time of one ``lumin-inferno paper-study`` command run serially (each ensemble member its own process, one
after the other) and on a ``LocalCluster`` (``--workers N``, one torch thread per worker), with the same settings
and seed; checks that both print the same σ table. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_study_fanout.py OUTDIR [--workers 2] [-- paper-study options, e.g. --full]

OUTDIR gets ``serial/`` and ``dask/`` study folders (each writes its own fold files, so both runs do the same work).
A finished study folder is resumed by the study itself, so rerun with a fresh OUTDIR to time again.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _run(cmd: list, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def _sigmas(outdir: Path) -> dict:
    """Every σ in a finished study's results.json (per member, median, ensemble, ...), keyed by its place."""
    flat = {}

    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, float) and not any(w in key for w in ("occupancy", "time", "_s")):
            flat[key] = node

    walk(json.loads((outdir / "results.json").read_text())["benchmarks"], "")
    return flat


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "lumin_inferno.cli", "paper-study", *extra]

    rows = []
    for name, opts in (("serial", []), ("dask", ["--workers", str(args.workers)])):
        out = args.outdir / name
        sec = _run([*cli, "--outdir", str(out), *opts], args.outdir / f"{name}.log")
        rows.append((name, sec))
        print(f"{name}: {sec:.0f} s", flush=True)

    serial, dask = (_sigmas(args.outdir / n) for n in ("serial", "dask"))
    n_members = sum(1 for k in serial if "per_model" in k)
    worst = max((abs(serial[k] - dask[k]) / abs(serial[k]) for k in serial if k in dask and serial[k]), default=0.0)
    same_keys = serial.keys() == dask.keys()
    print(f"paper-study {' '.join(extra)}; serial = members one after the other, each its own process; "
          f"dask = LocalCluster, {args.workers} workers × 1 torch thread")
    print("| run | wall s | / serial |")
    print("|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.0f} | {sec / rows[0][1]:.2f} |")
    print(f"σ values compared: {len(serial)} ({n_members} per member), same keys: {same_keys}, "
          f"largest relative difference serial vs dask: {worst:.2e}")


if __name__ == "__main__":
    main()
