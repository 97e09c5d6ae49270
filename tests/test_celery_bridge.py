"""The Celery bridge without a worker: task messages, bindings, and Orchestrator.from_celery.

Tests that publish use the real brokers; the worker tests are in ``test_celery_worker.py``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest

from mindtrace_kombu import Job, Orchestrator
from mindtrace_kombu.celery import (
    CeleryLocalClient,
    CeleryRabbitMQClient,
    CeleryRedisClient,
    CeleryTaskMessages,
    NoTaskForQueue,
    job_queue,
    job_task,
)
from mindtrace_kombu.config import exact_order_transport
from mindtrace_kombu.serialization import CONTENT_TYPE, SERIALIZER, dumps, loads
from tests.conftest import AMQP_URL, REDIS_URL, SampleInput, make_client, make_job, unique

celery = pytest.importorskip("celery")
redis = pytest.importorskip("redis")


def noop(job: Job) -> None:
    """A task body for tests that only register tasks."""


def make_app(broker: str, **conf: Any) -> Any:
    app = celery.Celery(unique("app"))
    app.conf.update(broker_url=broker, result_backend=REDIS_URL, **conf)
    return app


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> str:
    make_client(str(request.param))
    return REDIS_URL if request.param == "redis" else AMQP_URL


@pytest.fixture
def cleanup() -> Iterator[list[tuple[Orchestrator, str]]]:
    """(orchestrator, queue) pairs to delete after the test; the orchestrators are closed."""
    created: list[tuple[Orchestrator, str]] = []
    yield created
    for orchestrator, queue in created:
        try:
            orchestrator.delete_queue(queue)
        except KeyError:
            pass
        orchestrator.close()


def test_job_for_a_task_queue_becomes_a_celery_protocol_2_message() -> None:
    # Given an app whose task runs the jobs of a queue
    app = make_app("memory://")
    queue = unique("proto")

    @job_task(app, queue=queue, name="tests.proto", shared=False)
    def run(job: Job) -> None: ...

    job = make_job(7)
    # When the Orchestrator's message builder makes the message
    body, options = CeleryTaskMessages(app)(queue, job)
    # Expect Celery's task headers (task id = job id), and a body that our serializer turns
    # into [args, kwargs, embed] with the typed job as the only argument
    headers = options["headers"]
    assert (headers["lang"], headers["task"], headers["id"], headers["root_id"]) == ("py", "tests.proto", job.id, job.id)
    assert headers["retries"] == 0 and headers["argsrepr"].startswith("(Job(id=")
    assert options["correlation_id"] == job.id
    args, kwargs, embed = loads(dumps(body))
    assert args == [job] and isinstance(args[0].payload.input, SampleInput)
    assert kwargs == {} and set(embed) == {"callbacks", "errbacks", "chain", "chord"}


def test_job_task_accepts_the_job_content_type_and_leaves_the_serializers_alone() -> None:
    # Given an app configured with JSON, When a job task is registered and the app finalized
    app = make_app("memory://", task_serializer="json", result_serializer="json")
    queue = unique("accept")
    task = job_task(app, queue=queue, name="tests.accept", shared=False)(noop)
    app.finalize()
    # Expect the job content type accepted, the host's serializers unchanged, and the task
    # itself sending with the job serializer
    assert app.conf.accept_content == ["json", CONTENT_TYPE]
    assert (app.conf.task_serializer, app.conf.result_serializer) == ("json", "json")
    assert task.serializer == SERIALIZER and task.job_queue == queue
    assert task.backend.serializer == SERIALIZER and app.backend.serializer == "json"


def test_accepted_content_type_survives_a_configuration_reload() -> None:
    # Given an app already configured and bound to a job task
    app = make_app("memory://")
    job_task(app, queue=unique("reload"), name="tests.reload", shared=False)(noop)
    app.finalize()
    # When its configuration is loaded again from another object
    app.config_from_object({"broker_url": "memory://", "accept_content": ["json"]})
    # Expect the job content type accepted again, once
    assert app.conf.accept_content == ["json", CONTENT_TYPE]


def test_app_task_with_the_job_task_base_is_bound_to_its_queue() -> None:
    from mindtrace_kombu.celery import JobTask

    app = make_app("memory://")
    queue = unique("base")
    app.task(base=JobTask, job_queue=queue, name="tests.base", shared=False)(noop)
    assert CeleryTaskMessages(app).task_name(queue) == "tests.base"
    assert CeleryTaskMessages(app).task_name(unique("other")) is None


def test_job_queue_declares_like_the_orchestrator() -> None:
    fifo, priority = job_queue("jobs"), job_queue("urgent", max_priority=7)
    assert (fifo.name, fifo.routing_key, fifo.exchange.name, fifo.durable) == ("jobs", "jobs", "", True)
    assert fifo.queue_arguments is None
    assert priority.queue_arguments == {"x-max-priority": 7}


def test_from_celery_changes_nothing_but_the_accepted_content(broker: str, cleanup: list[Any]) -> None:
    # Given a host app with its own settings
    app = make_app(broker, broker_transport_options={"visibility_timeout": 321}, task_default_queue=unique("host"))
    before = {key: app.conf[key] for key in app.conf.keys()}
    # When an orchestrator is built from it and used
    orchestrator = Orchestrator.from_celery(app)
    queue = unique("host-jobs")
    cleanup.append((orchestrator, queue))
    orchestrator.declare_queue(queue)
    orchestrator.publish(queue, make_job(1))
    after = {key: app.conf[key] for key in app.conf.keys()}
    # Expect only accept_content to differ, extended by the job content type
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"accept_content"}
    assert after["accept_content"] == [*before["accept_content"], CONTENT_TYPE]


def test_from_celery_returns_connections_to_the_app_pool_when_idle(broker: str, cleanup: list[Any]) -> None:
    # Given an app whose pool holds one connection, and an orchestrator on it
    app = make_app(broker, broker_transport=exact_order_transport(broker), broker_pool_limit=1)
    orchestrator = Orchestrator.from_celery(app)
    queue = unique("pool")
    cleanup.append((orchestrator, queue))
    assert isinstance(orchestrator.client, (CeleryRedisClient, CeleryRabbitMQClient))
    # When several threads have published through it (and the orchestrator is still open)
    orchestrator.declare_queue(queue)
    threads = [threading.Thread(target=orchestrator.publish, args=(queue, make_job(n))) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Expect the app's only pooled connection to be free again, and every job published
    with app.pool.acquire(block=True, timeout=5) as connection:
        connection.ensure_connection(max_retries=1)
    assert orchestrator.count_queue_messages(queue) == 5


def test_from_celery_on_stock_redis_uses_the_exact_order_store(cleanup: list[Any]) -> None:
    # Given a host app on Kombu's stock Redis transport, with its own global_keyprefix
    make_client("redis")
    prefix = f"{unique('tenant')}:"
    app = make_app(REDIS_URL, broker_transport_options={"global_keyprefix": prefix})
    orchestrator = Orchestrator.from_celery(app)
    queue = unique("stock")
    cleanup.append((orchestrator, queue))
    # When it publishes to a priority queue
    orchestrator.declare_queue(queue, max_priority=5)
    for value, priority in [(1, 1), (2, 5), (3, 3)]:
        orchestrator.publish(queue, make_job(value), priority=priority)
    # Expect exact priority order, with every key under the app's prefix
    db = redis.Redis.from_url(REDIS_URL)
    assert db.keys(f"{prefix}*") and all(key.decode().startswith(f"{prefix}mindtrace:") for key in db.keys(f"{prefix}*"))
    received = [orchestrator.receive_message(queue) for _ in range(3)]
    assert [job.payload.input.value for job in received if job] == [2, 3, 1]  # type: ignore[attr-defined]


def test_from_celery_on_celery_memory_broker_names_the_fix() -> None:
    with pytest.raises(ValueError, match="broker_transport = 'mindtrace-memory'"):
        Orchestrator.from_celery(make_app("memory://"))
    client = Orchestrator.from_celery(make_app("memory:///bridge", broker_transport="mindtrace-memory")).client
    assert isinstance(client, CeleryLocalClient)


def test_plain_job_for_a_celery_consumed_queue_is_refused_before_sending(broker: str, cleanup: list[Any]) -> None:
    # Given a queue the app's workers consume (in task_queues) but no task bound to it
    queue = unique("unbound")
    app = make_app(broker, broker_transport=exact_order_transport(broker), task_queues=[job_queue(queue)])
    orchestrator = Orchestrator.from_celery(app)
    cleanup.append((orchestrator, queue))
    orchestrator.declare_queue(queue)
    # When a job is published there, Expect a refusal naming the fix, and nothing sent
    with pytest.raises(NoTaskForQueue, match="job_task"):
        orchestrator.publish_many(queue, [make_job(1), make_job(2)])
    assert orchestrator.count_queue_messages(queue) == 0


def test_queue_of_no_task_keeps_plain_jobs(broker: str, cleanup: list[Any]) -> None:
    # Given an orchestrator from a Celery app, and a queue no Celery worker consumes
    app = make_app(broker, broker_transport=exact_order_transport(broker))
    orchestrator = Orchestrator.from_celery(app)
    queue = unique("plain")
    cleanup.append((orchestrator, queue))
    orchestrator.declare_queue(queue)
    # When a job is published and received
    job = make_job(5)
    orchestrator.publish(queue, job)
    # Expect the plain job back, typed
    assert orchestrator.receive_message(queue, timeout=5) == job


def test_missing_celery_raises_an_actionable_import_error() -> None:
    # Given a process where Celery cannot be imported
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "import mindtrace_kombu.celery as bridge\n"
        "try:\n    bridge.JobTask\nexcept ImportError as exc:\n    print(exc)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    # Expect the module to import, and the first use to say what to install
    assert "pip install 'mindtrace-kombu[celery]'" in output.stdout
