"""The code passes its linter (ruff, settings in pyproject.toml): unused imports, undefined names, long lines."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "lumin_inferno", "tests", "benchmarks", "examples",
                        "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
