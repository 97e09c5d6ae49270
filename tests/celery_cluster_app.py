"""The Celery app ``tests/test_redis_cluster.py`` runs in ``celery -A tests.celery_cluster_app worker``
on a Redis Cluster: broker ``rediscluster://`` (this package's transport, registered by importing
it), startup nodes and queues from the environment. Each task appends its value to the list
``RUNS_KEY`` on the cluster, so the test reads the order tasks ran in."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue
from redis.cluster import RedisCluster

import mindtrace_kombu  # noqa: F401 - registers the rediscluster:// transport alias

MAX_PRIORITY = 10
NODES = os.environ.get("CLUSTER_NODES", "127.0.0.1:7000")
RUNS_KEY = os.environ.get("CLUSTER_RUNS_KEY", "{celery-test}:runs")
QUEUES = [name for name in os.environ.get("CLUSTER_QUEUES", "celery").split(",") if name]

app = Celery("cluster", broker=f"rediscluster://{NODES.split(',')[0]}")
app.conf.update(
    broker_transport_options={"startup_nodes": NODES},
    task_queues=[Queue(name, routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY}) for name in QUEUES],
    task_default_queue=QUEUES[0],
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


def _runs() -> RedisCluster:
    host, _, port = NODES.split(",")[0].rpartition(":")
    return RedisCluster(host=host, port=int(port))


@app.task(name="cluster.record")
def record(value: int) -> None:
    """Append ``value`` to the runs list."""
    _runs().rpush(RUNS_KEY, value)
