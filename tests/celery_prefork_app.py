"""The Celery app that ``tests/test_celery_prefork.py`` runs in ``celery -A tests.celery_prefork_app worker``.

Every setting comes from the environment (:meth:`Setup.env` writes it, :meth:`Setup.from_env`
reads it), so the test process builds the same app with :func:`create_app`. Each setup lives in a
namespace of its own on the shared Redis database:

* ``<namespace>:`` is the broker's ``global_keyprefix`` (every transport key),
* ``<namespace>-results:`` the result backend's ``global_keyprefix``,
* ``<namespace>-test:`` the keys through which tasks report to the test (:meth:`Setup.key`).

Tasks append one JSON line per execution to the list ``key("runs")``; the worker sets
``key("ready:<hostname>")`` once it consumes (``worker_ready``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import redis
from celery import Celery, Task
from celery.signals import worker_ready
from kombu import Exchange, Queue

#: Tasks that wait for the test's go-ahead (see :func:`block`) give up after this many seconds.
BLOCK_LIMIT = 120.0
#: Seconds between the attempts of :func:`flaky`.
RETRY_COUNTDOWN = 0.5
#: The rate limit of :func:`limited`, tasks per second.
RATE = 10
MAX_PRIORITY = 10


@dataclass(frozen=True)
class Setup:
    """One worker deployment: broker, transport, namespace, queues and acknowledgement mode."""

    broker_url: str
    broker_transport: str | None
    namespace: str
    queue: str
    priority_queue: str
    acks_late: bool = True
    remote_control: bool = True
    transport_options: dict[str, Any] = field(default_factory=dict)

    @property
    def broker_prefix(self) -> str:
        """The broker's ``global_keyprefix``."""
        return f"{self.namespace}:"

    @property
    def result_prefix(self) -> str:
        """The result backend's ``global_keyprefix``."""
        return f"{self.namespace}-results:"

    def key(self, name: str) -> str:
        """A Redis key through which tasks and the test talk, e.g. ``key("runs")``."""
        return f"{self.namespace}-test:{name}"

    def env(self) -> dict[str, str]:
        """The environment variables that make a worker process build this setup."""
        return {
            "PREFORK_BROKER_URL": self.broker_url,
            "PREFORK_BROKER_TRANSPORT": self.broker_transport or "",
            "PREFORK_NAMESPACE": self.namespace,
            "PREFORK_QUEUE": self.queue,
            "PREFORK_PRIORITY_QUEUE": self.priority_queue,
            "PREFORK_ACKS_LATE": "1" if self.acks_late else "0",
            "PREFORK_REMOTE_CONTROL": "1" if self.remote_control else "0",
            "PREFORK_TRANSPORT_OPTIONS": json.dumps(self.transport_options),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Setup:
        """The setup that :meth:`env` described (placeholders when imported outside a worker)."""
        return cls(
            broker_url=environ.get("PREFORK_BROKER_URL", "redis://localhost:6379/0"),
            broker_transport=environ.get("PREFORK_BROKER_TRANSPORT") or None,
            namespace=environ.get("PREFORK_NAMESPACE", "t-unused"),
            queue=environ.get("PREFORK_QUEUE", "unused-prefork"),
            priority_queue=environ.get("PREFORK_PRIORITY_QUEUE", "unused-prefork-priority"),
            acks_late=environ.get("PREFORK_ACKS_LATE", "1") == "1",
            remote_control=environ.get("PREFORK_REMOTE_CONTROL", "1") == "1",
            transport_options=json.loads(environ.get("PREFORK_TRANSPORT_OPTIONS", "{}")),
        )


def declared_queues(setup: Setup) -> list[Queue]:
    """The task queue, and the priority queue (``x-max-priority``), each with its own exchange."""
    return [
        Queue(setup.queue, Exchange(setup.queue), routing_key=setup.queue),
        Queue(
            setup.priority_queue, Exchange(setup.priority_queue), routing_key=setup.priority_queue,
            max_priority=MAX_PRIORITY,
        ),
    ]


def create_app(setup: Setup) -> Celery:
    """The app with the tasks below, configured for ``setup``."""
    app = Celery("celery_prefork_app", set_as_current=False)
    app.conf.update(
        broker_url=setup.broker_url,
        broker_transport=setup.broker_transport,
        broker_transport_options={**setup.transport_options, "global_keyprefix": setup.broker_prefix},
        broker_connection_retry_on_startup=True,
        result_backend=setup.broker_url,
        result_backend_transport_options={"global_keyprefix": setup.result_prefix},
        task_default_queue=setup.queue,
        task_queues=declared_queues(setup),
        task_acks_late=setup.acks_late,
        worker_enable_remote_control=setup.remote_control,
    )
    _define_tasks(app, setup)
    return app


@functools.lru_cache(maxsize=None)
def _redis(url: str) -> redis.Redis:
    """One client per process (redis-py's pool reconnects after a fork)."""
    return redis.Redis.from_url(url)


def _define_tasks(app: Celery, setup: Setup) -> None:
    def report(task: Task, **fields: Any) -> None:
        """Append one execution line to ``key("runs")``."""
        line = {"task": task.name, "id": task.request.id, "host": task.request.hostname,
                "pid": os.getpid(), "at": time.time(), **fields}
        _redis(setup.broker_url).rpush(setup.key("runs"), json.dumps(line))

    @app.task(name="prefork.record", bind=True, shared=False)
    def record(self: Task, value: int) -> int:
        """Report the execution and return ``value``."""
        report(self, value=value)
        return value

    @app.task(name="prefork.add", shared=False)
    def add(x: int, y: int) -> int:
        """``x + y``."""
        return x + y

    @app.task(name="prefork.mul", shared=False)
    def mul(x: int, y: int) -> int:
        """``x * y``."""
        return x * y

    @app.task(name="prefork.total", shared=False)
    def total(values: list[int]) -> int:
        """The sum of ``values`` (a chord body)."""
        return sum(values)

    @app.task(name="prefork.flaky", bind=True, shared=False)
    def flaky(self: Task, failures: int) -> int:
        """Fail the first ``failures`` attempts, retrying after RETRY_COUNTDOWN; return the attempts."""
        report(self, retries=self.request.retries)
        if self.request.retries < failures:
            raise self.retry(countdown=RETRY_COUNTDOWN)
        return int(self.request.retries) + 1

    @app.task(name="prefork.stamp", bind=True, shared=False)
    def stamp(self: Task) -> float:
        """Report the execution with its ETA and return when it started."""
        report(self, eta=self.request.eta)
        return time.time()

    @app.task(name="prefork.limited", bind=True, shared=False, rate_limit=f"{RATE}/s")
    def limited(self: Task, value: int) -> int:
        """A rate-limited :func:`record`."""
        report(self, value=value)
        return value

    @app.task(name="prefork.ordered", bind=True, shared=False)
    def ordered(self: Task, priority: int, index: int) -> int:
        """Report the execution order of priority tasks."""
        report(self, priority=priority, index=index, delivered=self.request.delivery_info.get("priority"))
        return index

    @app.task(name="prefork.block", bind=True, shared=False)
    def block(self: Task, gate: str) -> str:
        """Report the start, then wait until the test sets ``key(gate)``; return the task id."""
        report(self, gate=gate)
        client = _redis(setup.broker_url)
        deadline = time.monotonic() + BLOCK_LIMIT
        while not client.exists(setup.key(gate)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {gate!r} not opened within {BLOCK_LIMIT} s")
            time.sleep(0.01)
        return str(self.request.id)


SETUP = Setup.from_env(os.environ)
app = create_app(SETUP)


@worker_ready.connect
def _announce_ready(sender: Any, **_: Any) -> None:
    """Tell the test that this worker consumes: ``key("ready:<hostname>")``."""
    _redis(SETUP.broker_url).set(SETUP.key(f"ready:{sender.hostname}"), "1")
