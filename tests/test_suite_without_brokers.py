"""The suite on a machine without the brokers or their tools (brokers in containers, or none):
tests skip quickly, each with its reason printed, instead of failing or re-probing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Files whose tests need a broker, and some of them also redis-server, ss or rabbitmqctl.
NEEDS_TOOLS = [
    "tests/test_worker_processes.py", "tests/test_error_table.py", "tests/test_client_api.py",
    "tests/test_replicated_publish.py",
]


@pytest.mark.timeout(300)
def test_without_brokers_or_their_tools_the_tests_skip_with_reasons(tmp_path: Path) -> None:
    closed = "127.0.0.1:9"  # the discard port: nothing listens there
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("MINDTRACE_REQUIRE_BROKERS", "PATH")},
        "PATH": str(Path(sys.executable).parent),  # no redis-server, ss or rabbitmqctl
        "REDIS_URL": f"redis://{closed}/0",
        "AMQP_URL": f"amqp://guest:guest@{closed}//",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *NEEDS_TOOLS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "failed" not in summary and "error" not in summary and "skipped" in summary, summary
    # the reasons are printed: the brokers, and the tools of the tests that start their own servers
    assert "unreachable" in result.stdout and "redis-server not on PATH" in result.stdout
