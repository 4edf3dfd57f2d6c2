"""scripts/device_check.sh runs end to end on CPU with --cpu-dry-run (tiny sizes), so it is
known to work before a GPU is lent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_device_check_cpu_dry_run():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "INTERP_OFFLINE": "1"}
    done = subprocess.run(
        ["bash", str(root / "scripts" / "device_check.sh"), "--cpu-dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "RESULTS" in out and "CPU DRY RUN" in out
    for step in (
        "gpu-tests",
        "render-vs-lucent",
        "examples-vs-inference",
        "dissection-vs-inference",
        "full-atlas",
        "speedups",
        "explorer",
    ):
        assert f"{step}" in out
    assert "FAILED" not in out
    assert "x lucent" in out and "examples pass" in out and "dissection (2 passes" in out
    assert "bf16+channels_last" in out and "max rel diff" in out
    assert "projected for every unit" in out
