"""Outputs do not change by accident: every number of a small atlas, examples and hierarchy
job equals the golden file (``tests/golden/jobs.json``, regenerated only with a reason)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from golden_jobs import GOLDEN, run_jobs  # noqa: E402


@pytest.fixture(scope="module")
def runs():
    return run_jobs()


@pytest.mark.parametrize("job", ["atlas", "examples", "hierarchy"])
def test_job_outputs_equal_the_golden_file(job, runs, one_thread):
    golden = json.loads(GOLDEN.read_text())[job]
    got = runs[job]
    missing = sorted(set(golden) - set(got))
    added = sorted(set(got) - set(golden))
    assert not missing and not added, f"keys changed: -{missing[:5]} +{added[:5]}"
    changed = []
    for key, want in golden.items():
        value = got[key]
        if isinstance(want, float) and isinstance(value, int | float):
            if not math.isclose(value, want, rel_tol=1e-4, abs_tol=1e-6):
                changed.append(f"{key}: {want} -> {value}")
        elif value != want:
            changed.append(f"{key}: {want!r} -> {value!r}")
    assert not changed, f"{len(changed)} outputs changed: " + "; ".join(changed[:8])
