"""Every example runs as a user would run it (a subprocess, from the repository root), prints
what it promises, and leaves no queue behind; every Python block of the README is in an example.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mindtrace_kombu import Orchestrator, QueueNotFound

from .conftest import AMQP_URL, REDIS_URL, make_client

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: example file -> (backend it needs, the queues it declares, the lines it must print)
EXPECTED: dict[str, tuple[str, list[str], list[str]]] = {
    "async_service.py": (
        "local",
        [],
        [
            "published 20, queued 20",
            "completed=20 retried=0 dead-lettered=0",
            "img-0.png -> /thumbs/img-0.png (completed)",
            "claimed: late.png",
        ],
    ),
    "quickstart.py": (
        "local",
        [],
        [
            "Received job_123 (example_job): SimpleJobInput(data='test_data', param1='value1')",
            "Left in my_queue: 0",
            "Nothing more: None",
        ],
    ),
    "job_status.py": (
        "local",
        [],
        [
            "cancelled before any worker: True",
            "before the worker: queued",
            "ok: completed, output Total(total=6), attempts 1",
            "empty: failed, error 'ValueError: nothing to add', dead-lettered True",
            "skipped: cancelled",
            "failed jobs: [True]",
        ],
    ),
    "redis_backend.py": (
        "redis",
        ["priority_queue", "fifo_queue", "stack_queue"],
        [
            "priority: ['job', 'high_priority_job', 'low_priority_job']",
            "payload: ImageInput /images/job.png",
            "fifo count: 3",
            "fifo: ['first', 'second', 'third']",
            "stack: ['third', 'second', 'first']",
            "done",
        ],
    ),
    "rabbitmq_backend.py": (
        "rabbitmq",
        ["rabbitmq_queue", "priority_queue"],
        [
            "count: 1",
            "priority count: 4",
            "priority: ['urgent', 'urgent_too', 'normal', 'background']",
            "received: job ReportInput",
            "done",
        ],
    ),
    "worker.py": (  # in-process by default; job ids are random, so only the summary lines
        "local",
        [],
        [
            "completed=2 retried=2 dead-lettered=1",
            "dead letter: broken after 3 attempts: failed after 3 attempts: ValueError: bad width 0",
            "claimed: None",
        ],
    ),
    "original_clients.py": (
        "local",
        [],
        [
            "{'status': 'success', 'message': \"Queue 'images' declared successfully.\"}",
            "count: 2",
            "first: poster 4000",
            "orchestrator sees: 1",
            "success",
            "exchanges: the in-process backend does not support exchanges; publish to queues by name, "
            "or use RabbitMQ for exchange routing",
            "Deleted queue 'images'.",
        ],
    ),
    "complete_example.py": (
        "redis",
        ["data_processing_queue"],
        [
            "Published job: dp_001",
            "Jobs in queue: 1",
            "Processing job: data_processing_job",
            "Input: DataProcessingInput(dataset_path='/data/my_dataset.csv', "
            "processing_type='classification', timeout=300)",
        ],
    ),
}


def run_example(name: str, suffix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": REDIS_URL, "AMQP_URL": AMQP_URL, "MINDTRACE_EXAMPLE_SUFFIX": suffix}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_runs_and_prints_what_it_promises(name: str) -> None:
    backend, queues, expected = EXPECTED[name]
    client = make_client(backend)  # skips (or fails in CI) when the broker is unreachable
    suffix = f"-example-{uuid.uuid4().hex[:8]}"
    # When the example runs
    result = run_example(name, suffix)
    # Expect success and its output, line by line
    assert result.returncode == 0, result.stderr
    printed = iter(result.stdout.splitlines())
    missing = [line for line in expected if line not in printed]  # in order: `in` consumes the iterator
    assert not missing, f"missing or out of order: {missing}\n--- stdout:\n{result.stdout}"
    # and no queue left behind on the shared broker
    orchestrator = Orchestrator(client)
    try:
        for queue in queues:
            with pytest.raises(QueueNotFound):
                orchestrator.count_queue_messages(queue + suffix)
    finally:
        orchestrator.close()


@pytest.mark.timeout(150)
def test_rabbitmq_example_explains_why_there_is_no_stack() -> None:
    make_client("rabbitmq")
    result = run_example("rabbitmq_backend.py", f"-example-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 0, result.stderr
    assert "stack: queue 'stack_queue-example-" in result.stdout
    assert "RabbitMQ has no LIFO queues: use queue_type='fifo'" in result.stdout


def test_every_top_level_example_is_tested() -> None:
    found = {path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_")}
    untested = found - set(EXPECTED)
    assert not untested, f"add {sorted(untested)} to EXPECTED in tests/test_examples.py"


def _normalized(code: str) -> list[str]:
    return [line.rstrip() for line in code.splitlines() if line.strip()]


def _dedented(lines: list[str]) -> str:
    """The lines without their common indentation (a README block may sit inside a function)."""
    return textwrap.dedent("\n".join(lines))


def test_every_readme_python_block_is_in_an_example() -> None:
    # Given the README's Python code blocks
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "the README has no Python code block"
    sources = {
        str(path.relative_to(EXAMPLES)): _normalized(path.read_text(encoding="utf-8"))
        for path in EXAMPLES.rglob("*.py")
    }
    # Expect each to appear, line for line and in order, in one example file
    for block in blocks:
        lines = _normalized(block)
        homes = [
            name for name, source in sources.items()
            if any(_dedented(source[i : i + len(lines)]) == _dedented(lines) for i in range(len(source) - len(lines) + 1))
        ]
        assert homes, f"README block is in no file under examples/:\n{block}"
