"""The sdist carries what its tests need (tests, examples, docs, the Celery config module, the Lua
scripts, the license), and its tests run from the unpacked archive."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = [
    "LICENSE", "README.md", "celeryconfig.py", "MANIFEST.in", "docs/architecture.md",
    "tests/conftest.py", "tests/celery_test_app.py", "tests/bomb_worker.py", "tests/worker_handlers.py",
    "examples/quickstart.py", "examples/original_clients.py", "benchmarks/__main__.py",
    "mindtrace_kombu/redis_store/lua/put.lua", "mindtrace_kombu/py.typed", "mindtrace/jobs/__init__.py",
]


@pytest.mark.timeout(300)
def test_the_sdist_carries_its_tests_and_they_run_unpacked(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True, capture_output=True
    )
    (archive,) = tmp_path.glob("mindtrace*kombu-*.tar.gz")
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        tar.extractall(tmp_path, filter="data")
    missing = [name for name in NEEDED if name not in names]
    assert not missing, f"the sdist lacks {missing}"
    unpacked = tmp_path / top
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_serialization.py", "tests/test_decoding.py"],
        cwd=unpacked, capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
