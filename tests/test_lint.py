"""The code passes its linter (ruff) and type checker (mypy), settings in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "lumin_inferno", "tests", "benchmarks", "examples",
                        "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_passes():
    # settings in pyproject.toml ([tool.mypy]); the untyped host (LUMIN) and plotting libraries are ignored imports
    r = subprocess.run([sys.executable, "-m", "mypy", "lumin_inferno"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
