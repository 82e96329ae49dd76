"""A few seconds of benchmarks/soak_serve.py: the soak's own machinery works (load, ledger, shutdown,
read-back), so that the long runs reported in docs/deploy.md can be trusted and repeated."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_a_short_soak_meets_its_targets(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak_serve.py"), "--seconds", "6", "--clients", "3",
                        "--stores", "lite", "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    [written] = tmp_path.glob("soak_serve-*.json")
    result = json.loads(written.read_text())
    assert result["benchmark"] == "soak_serve" and result["machine"]["cores"] >= 1
    [run] = result["figures"]["runs"]
    targets = run["targets"]
    # RSS after a few seconds is still warming up; the RSS target is for the minutes-long runs
    assert all(ok for name, ok in targets.items() if not name.startswith("rss")), (targets, run["anomalies"])
    assert run["requests"] > 10 and run["rows"]["uploads_acknowledged"] > 0
    assert run["rows"]["expected"] == run["rows"]["stored"] >= 6
    assert r.returncode == (0 if all(targets.values()) else 1)
