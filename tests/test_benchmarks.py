"""The benchmark harness runs (quick mode, every backend) and prints its tables. It asserts
nothing about speed: rates are measured by ``python -m benchmarks``, not by tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.names import (
    CELERY_E2E_AMQP,
    CELERY_E2E_OURS,
    CELERY_E2E_STOCK,
    CELERY_THREADS_E2E,
    DRAMATIQ_E2E,
    MINDTRACE_E2E,
    MINDTRACE_E2E_TUNED,
    RQ_E2E,
)

from .conftest import make_client

ROOT = Path(__file__).resolve().parents[1]
#: The end-to-end rows: every system's workers on each broker (RQ is Redis-only).
OURS_AND_PEERS = (MINDTRACE_E2E, MINDTRACE_E2E_TUNED, CELERY_THREADS_E2E, DRAMATIQ_E2E)
E2E_ROWS = [
    *(f"redis/{name}" for name in (*OURS_AND_PEERS, CELERY_E2E_STOCK, CELERY_E2E_OURS, RQ_E2E)),
    *(f"rabbitmq/{name}" for name in (*OURS_AND_PEERS, CELERY_E2E_AMQP)),
]


@pytest.mark.timeout(620)
def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    for backend in ("redis", "rabbitmq"):
        make_client(backend)  # skip or fail (MINDTRACE_REQUIRE_BROKERS=1) like the other tests
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--n", "100", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,  # ~16 worker fleets start and stop
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio" in result.stdout and "project worker consume+ack" in result.stdout
    assert "e2e worker / Celery prefork (>= 3)" in result.stdout
    data = json.loads(report.read_text())
    assert data, "the JSON report is empty"
    measured = {row["key"] for row in data["results"]}
    missing = [key for key in E2E_ROWS if key not in measured]
    if os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1":  # then no package may be missing either
        assert not missing, f"e2e rows missing: {missing}; notes: {data['notes']}"
