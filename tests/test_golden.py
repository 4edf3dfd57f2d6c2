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

# The ERF probe's Gabor fit (float32 Levenberg-Marquardt from three starts) of a poorly fitted
# unit (R^2 < 0.5) can land on another optimum when its gradients differ in the 7th digit, as
# they do between CPUs (oneDNN picks other kernels): measured on the golden model's first
# layer, a relative 1e-6 perturbation of the ERFs moved one unit's orientedness by 0.033, and
# the golden file written on an Intel CPU (AMX) read orientedness q10 0.1996 where an AMD EPYC
# reads 0.1600 (mean 0.5903 vs 0.5889, R^2 mean 0.4784 vs 0.4786). These statistics are
# compared at the spread the platforms show; every other number at 1e-4.
PLATFORM_TOLERANCE = {".erf.orientedness": 0.06, ".erf.r2": 2e-3}


def _tolerance(key):
    return next((t for part, t in PLATFORM_TOLERANCE.items() if part in key), 1e-6)


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
            if not math.isclose(value, want, rel_tol=1e-4, abs_tol=_tolerance(key)):
                changed.append(f"{key}: {want} -> {value}")
        elif value != want:
            changed.append(f"{key}: {want!r} -> {value!r}")
    assert not changed, f"{len(changed)} outputs changed: " + "; ".join(changed[:8])
