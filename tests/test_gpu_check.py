"""gpu/check.sh, the prepared GPU check, end to end in its CPU dry run (same script, tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_the_benchmark(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "gpu/check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {r["section"] for r in rows} == {"x2", "x4"}
    assert all(r["seconds"] for r in rows)
    assert "skipped" in (tmp_path / "tests.log").read_text() or "passed" in (tmp_path / "tests.log").read_text()
    assert (tmp_path / "bench.md").is_file() and (tmp_path / "environment.txt").is_file()
