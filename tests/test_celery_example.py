"""``examples/celery_app`` runs as its README section says: start a worker, run the producer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mindtrace_kombu import Orchestrator
from tests.celery_test_app_harness import ROOT, celery_worker
from tests.conftest import AMQP_URL, REDIS_URL, make_client, unique

pytest.importorskip("celery")


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_celery_example_prints_typed_results(backend: str, tmp_path: Path) -> None:
    # Given the example's worker on its own queue, on the broker celeryconfig reads from the environment
    make_client(backend)
    broker = REDIS_URL if backend == "redis" else AMQP_URL
    queue = unique("thumbnails")
    env = {"EXAMPLE_QUEUE": queue, "MINDTRACE_BROKER_URL": broker, "CELERY_RESULT_BACKEND": REDIS_URL}
    env.pop("CELERY_BROKER_URL", None)
    worker_name = unique("example")
    try:
        with celery_worker("examples.celery_app.app", [queue], env, tmp_path / "worker.log", worker_name) as worker:
            # When the producer runs
            producer = subprocess.run(
                [sys.executable, "-m", "examples.celery_app.producer"], cwd=ROOT, capture_output=True, text=True,
                timeout=90, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            )
            assert producer.returncode == 0, f"{producer.stderr}\nworker log:\n{worker.log()}"

        # Expect every job completed, with its typed output
        assert producer.stdout.splitlines() == [
            "thumbnail cat.jpg: completed -> ThumbnailOutput(cat_128.png, 128)",
            "thumbnail dog.jpg: completed -> ThumbnailOutput(dog_64.png, 64)",
            "thumbnail bird.jpg: completed -> ThumbnailOutput(bird_32.png, 32)",
        ]
    finally:
        # The job queue, and on Redis the worker's remote-control queue (celeryconfig leaves remote
        # control on; this package's Redis transport keeps auto-delete queues)
        with Orchestrator.from_url(broker) as orchestrator:
            for name in (queue, f"{worker_name}@{socket.gethostname()}.celery.pidbox"):
                try:
                    orchestrator.delete_queue(name)
                except KeyError:
                    pass
