"""A host Celery app on Kombu's stock Redis transport and an Orchestrator share one Redis database.

The host keeps its own task, queue, exchange binding and ``unacked`` keys; every key of the
Orchestrator (``from_celery``) lives in its namespace (``mindtrace:...``). Both keep working.
Job queues are consumed by workers on this package's transport (``mindtrace-redis``); a stock
worker does not read them.
"""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.celery import CeleryRedisClient
from tests.celery_test_app_harness import celery_worker
from tests.conftest import REDIS_URL, make_client, make_job, unique

celery = pytest.importorskip("celery")
redis = pytest.importorskip("redis")


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    make_client("redis")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def queue_names_in(redis_db: redis.Redis, key: str) -> set[str]:
    """Routing keys of the unacked messages recorded under ``key`` (a Kombu unacked hash)."""
    names = set()
    for raw in redis_db.hvals(key):
        _, exchange, routing_key = json.loads(raw)[:3]
        names.add(routing_key or exchange)
    return names


def test_host_app_and_orchestrator_share_one_redis_database(redis_db: redis.Redis, tmp_path: object) -> None:
    from tests.celery_test_app_host import create_app

    host_queue, jobs_queue, plain_queue = unique("host"), unique("host-jobs"), unique("host-plain")
    app = create_app(REDIS_URL, host_queue, jobs_queue)
    orchestrator = Orchestrator.from_celery(app)
    results = []
    env = {"CELERY_TEST_BROKER": REDIS_URL, "CELERY_HOST_QUEUE": host_queue, "CELERY_HOST_JOB_QUEUE": jobs_queue}
    output = tmp_path / "worker.log"  # type: ignore[operator]
    try:
        orchestrator.declare_queue(jobs_queue)
        orchestrator.declare_queue(plain_queue)
        with celery_worker("tests.celery_test_app_host", [host_queue, jobs_queue], env, output, unique("host")) as worker:
            # When the host sends its own tasks and the Orchestrator its jobs, interleaved
            host_results = [app.tasks["host.add"].delay(n, 1) for n in range(3)]
            plain = make_job(22)
            orchestrator.publish(plain_queue, plain)
            results = host_results

            # Expect the host's tasks done with JSON results, the plain job received through
            # the Orchestrator
            assert [result.get(timeout=30) for result in host_results] == [1, 2, 3], worker.log()
            assert orchestrator.receive_message(plain_queue, timeout=5) == plain
            assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"

        # Expect separate bookkeeping: the host's stock channel keeps its unacked hash, holding
        # nothing of ours, and the Orchestrator's queues live in its own namespace only
        assert isinstance(orchestrator.client, CeleryRedisClient)
        with app.connection_for_write() as host_connection:
            assert host_connection.default_channel.unacked_key == "unacked"
        ours = {host_queue, jobs_queue, plain_queue}
        assert not ours & queue_names_in(redis_db, "unacked")
        for name in (jobs_queue, plain_queue):
            keys = {key.decode() for key in redis_db.scan_iter(match=f"*{name}*", count=1000)}
            assert keys and all(key.startswith("mindtrace:q:{") for key in keys), keys
    finally:
        for queue in (jobs_queue, plain_queue):
            try:
                orchestrator.delete_queue(queue)
            except KeyError:
                pass
        orchestrator.close()
        for result in results:
            result.forget()
        for key in redis_db.scan_iter(match=f"*{host_queue}*", count=1000):  # the host's list and exchange bindings
            redis_db.delete(key)
