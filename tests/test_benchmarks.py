"""The benchmark harness runs (quick mode, every backend) and prints its tables. It asserts
nothing about speed: rates are measured by ``python -m benchmarks``, not by tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_client

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    for backend in ("redis", "rabbitmq"):
        make_client(backend)  # skip or fail (MINDTRACE_REQUIRE_BROKERS=1) like the other tests
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--n", "100", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio" in result.stdout and "project worker consume+ack" in result.stdout
    data = json.loads(report.read_text())
    assert data, "the JSON report is empty"
