"""The Redis Cluster of the ``rediscluster`` rows: ``REDIS_CLUSTER_URL``, else 6 nodes (3 masters,
3 replicas) started on free loopback ports for the run by the tests' launcher, stopped after it."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness import Settings, Skipped


@contextmanager
def on_cluster(settings: Settings) -> Iterator[Settings]:
    """Yield ``settings`` with a cluster URL, starting a cluster when it has none."""
    if settings.cluster_url:
        yield settings
        return
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise Skipped("no REDIS_CLUSTER_URL, and redis-server or redis-cli is not on PATH")
    try:
        from tests.redis_cluster import (
            RedisClusterNodes,  # the launcher needs the test extra (pytest)
        )
    except ImportError as exc:
        raise Skipped(f"no REDIS_CLUSTER_URL, and the tests' cluster launcher is unavailable: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="mindtrace-bench-cluster-") as directory:
        nodes = RedisClusterNodes(Path(directory))
        try:
            yield dataclasses.replace(settings, cluster_url=nodes.url)
        finally:
            nodes.stop()
