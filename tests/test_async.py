"""The asyncio API on every backend: coalesced publishes (fewer round trips, exactly once, in call
order, errors to their own caller), the queue and result calls, ``async with claim``, async
consumption (handlers on the loop, at most ``concurrency`` at once, retries, dead letters, time
limits, warm and cold stops), and an event loop that nothing blocks."""

from __future__ import annotations

import asyncio
import gc
import inspect
import linecache
import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from mindtrace_kombu import (
    AsyncOrchestrator,
    ExecutionStatus,
    InvalidArgument,
    InvalidPriority,
    InvalidQueueName,
    Job,
    JobEncodeError,
    JobInput,
    JobOutput,
    JobSchema,
    JobType,
    LocalClient,
    Orchestrator,
    QueueNotFound,
    ResultsNotConfigured,
)
from mindtrace_kombu.aio import AsyncWorker
from mindtrace_kombu.worker import JobEvent

from .conftest import BACKENDS, make_job, unique, wait_until

pytestmark = pytest.mark.timeout(120)
CALLERS = 100


@pytest.fixture(params=[*BACKENDS, "rediscluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend, and the Redis backend on a Redis Cluster."""
    return str(request.param)


class Doubled(JobOutput):
    doubled: int


def value(job: Job | None) -> int:
    assert job is not None
    return int(job.payload.input.value)  # type: ignore[attr-defined]


def drain(orchestrator: Orchestrator, queue: str) -> list[int]:
    """Every job left in ``queue``, in delivery order."""
    values = []
    while (job := orchestrator.receive_message(queue)) is not None:
        values.append(value(job))
    return values


@pytest.fixture
def backend_publishes(orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of the publish calls the orchestrator's backend receives (one round trip each:
    ``publish``, or ``publish_recorded`` where the Redis put script writes the job records)."""
    sizes: list[int] = []
    backend = orchestrator.backend
    for name in ("publish", "publish_recorded"):
        original = getattr(backend, name, None)
        if original is not None:
            monkeypatch.setattr(backend, name, _counting(original, sizes))
    yield sizes


def _counting(original: Callable[..., Any], sizes: list[int]) -> Callable[..., Any]:
    def publish(queue: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(messages))
        return original(queue, messages, *args, **kwargs)
    return publish


# -- publishing -------------------------------------------------------------------------------------


def test_concurrent_publishes_share_round_trips_and_arrive_once_in_call_order(
    orchestrator: Orchestrator, queue_name: str, backend_publishes: list[int]
) -> None:
    # Given 100 tasks, each publishing 5 jobs one after the other
    orchestrator.declare_queue(queue_name)

    async def main() -> list[str]:
        async with AsyncOrchestrator(orchestrator) as client:
            async def caller(number: int) -> list[str]:
                return [await client.publish(queue_name, make_job(number * 100 + n)) for n in range(5)]
            return [job_id for ids in await asyncio.gather(*map(caller, range(CALLERS))) for job_id in ids]

    ids = asyncio.run(main())
    # Expect far fewer backend publishes than the 500 calls, together carrying each job once
    assert len(ids) == len(set(ids)) == 500
    assert 0 < len(backend_publishes) <= 50 and sum(backend_publishes) == 500
    received = drain(orchestrator, queue_name)
    assert sorted(received) == sorted(c * 100 + n for c in range(CALLERS) for n in range(5))
    # and each caller's jobs in the order it published them
    for caller in range(CALLERS):
        assert [v for v in received if v // 100 == caller] == [caller * 100 + n for n in range(5)]


def unencodable_job() -> Job:
    return Job(name="bad", payload=JobSchema(name="s", input=JobInput(blob=object())))


def test_a_bad_publish_fails_only_its_caller(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given good publishes with bad ones among them, all made at once
    orchestrator.declare_queue(queue_name)
    bad: list[tuple[Callable[[AsyncOrchestrator], Any], type[Exception]]] = [
        (lambda client: client.publish(queue_name, {"not": "a job"}), TypeError),  # type: ignore[arg-type]
        (lambda client: client.publish("amq.reserved", make_job()), InvalidQueueName),
        (lambda client: client.publish(queue_name, make_job(), priority=1), InvalidPriority),  # a fifo queue
        (lambda client: client.publish(queue_name, make_job(), priority=True), InvalidPriority),
        (lambda client: client.publish(queue_name, unencodable_job()), JobEncodeError),
        (lambda client: client.publish_many(queue_name, [make_job(50), unencodable_job()]), JobEncodeError),
        (lambda client: client.publish(unique("missing"), make_job()), QueueNotFound),
    ]

    async def main() -> list[object]:
        async with AsyncOrchestrator(orchestrator) as client:
            good = [client.publish(queue_name, make_job(n)) for n in range(10)]
            return await asyncio.gather(
                *good[:5], *(call(client) for call, _ in bad), *good[5:], return_exceptions=True
            )

    outcomes = asyncio.run(main())
    # Expect each bad call to get its own error, and every good job published, in call order
    errors = outcomes[5 : 5 + len(bad)]
    assert [type(error) for error in errors] == [expected for _, expected in bad]
    assert all(isinstance(job_id, str) for job_id in outcomes[:5] + outcomes[5 + len(bad) :])
    assert drain(orchestrator, queue_name) == list(range(10))


def test_mixed_priorities_are_coalesced_and_delivered_in_priority_then_call_order(
    orchestrator: Orchestrator, queue_name: str, backend_publishes: list[int]
) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    explicit = [n % 4 for n in range(40)]  # distinct explicit priorities commute: one call each
    mixed = [None, 0, None, 0, 2]  # None and 0 are the same priority: their order is kept

    async def publish_all(client: AsyncOrchestrator, priorities: list[int | None], offset: int) -> None:
        await asyncio.gather(*(
            client.publish(queue_name, make_job(offset + n), priority=priority) for n, priority in enumerate(priorities)
        ))

    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            await publish_all(client, explicit, 0)
            assert len(backend_publishes) <= 8
            assert drain(orchestrator, queue_name) == sorted(range(40), key=lambda n: (-explicit[n], n))
            await publish_all(client, mixed, 100)
            assert drain(orchestrator, queue_name) == [104, 100, 101, 102, 103]

    asyncio.run(main())


def test_confirm_is_passed_per_call_and_a_change_of_it_keeps_call_order(
    orchestrator: Orchestrator, queue_name: str, backend_publishes: list[int]
) -> None:
    orchestrator.declare_queue(queue_name)
    confirms: list[bool | None] = [None, True, None, True, True]

    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            await asyncio.gather(*(
                client.publish(queue_name, make_job(n), confirm=confirm) for n, confirm in enumerate(confirms)
            ))
            # one publish_many per run of equal options, sent one after the other
            assert len(backend_publishes) == 4
            assert drain(orchestrator, queue_name) == list(range(5))
            await client.publish(queue_name, make_job(9), confirm=False)  # RabbitMQ: not awaited
            wait_until(lambda: orchestrator.count_queue_messages(queue_name) == 1, what="the unconfirmed job")

    asyncio.run(main())


def test_submit_declares_the_routed_queue_once_and_keeps_call_order(
    orchestrator: Orchestrator, queue_name: str
) -> None:
    # Given a route to a queue that does not exist yet
    orchestrator.routes[JobType.DATA_PROCESSING] = queue_name

    async def main() -> list[str]:
        async with AsyncOrchestrator(orchestrator) as client:
            return list(await asyncio.gather(*(
                client.submit(make_job(n, JobType.DATA_PROCESSING)) for n in range(30)
            )))

    ids = asyncio.run(main())
    # Expect it declared as fifo, holding every job in call order
    assert len(set(ids)) == 30
    assert orchestrator.queue_spec(queue_name).queue_type.value == "fifo"
    assert drain(orchestrator, queue_name) == list(range(30))


# -- queues, receiving, results ------------------------------------------------------------------------


def test_queue_calls(orchestrator: Orchestrator, queue_name: str) -> None:
    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            await client.declare_queue(queue_name, max_priority=5)
            spec = await client.queue_spec(queue_name)
            assert (spec.queue_type.value, spec.max_priority) == ("priority", 5)
            assert queue_name in [spec.name for spec in await client.list_queues()]
            ids = await client.publish_many(queue_name, [make_job(n) for n in range(3)], priority=3)
            assert await client.count_queue_messages(queue_name) == 3
            assert [job.id for job in await client.peek(queue_name)] == ids
            assert await client.clean_queue(queue_name) == 3
            assert await client.receive_message(queue_name) is None
            await client.publish(queue_name, make_job(7))
            assert value(await client.receive_message(queue_name, timeout=5)) == 7
            await client.delete_queue(queue_name)
            with pytest.raises(QueueNotFound):
                await client.count_queue_messages(queue_name)

    asyncio.run(main())


def test_result_calls(orchestrator: Orchestrator, backend: str, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)

    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            job = make_job(1)
            await client.publish(queue_name, job)
            if backend == "rabbitmq":  # no result store unless one is configured
                with pytest.raises(ResultsNotConfigured):
                    await client.get_job(job.id)
                return
            recorded = await client.get_job(job.id)
            assert recorded is not None and recorded.status is ExecutionStatus.QUEUED
            assert await client.cancel(job.id) is True
            assert (await client.wait_for(job.id, timeout=10)).status is ExecutionStatus.CANCELLED
            assert job.id in [listed.id for listed in await client.list_jobs(queue=queue_name)]
            assert await client.forget(job.id) is True
            assert await client.get_job(job.id) is None

    asyncio.run(main())


def test_claim_is_an_async_context_manager_with_the_sync_semantics(
    orchestrator: Orchestrator, backend: str, queue_name: str
) -> None:
    orchestrator.declare_queue(queue_name)
    jobs = [make_job(n) for n in range(3)]
    orchestrator.publish_many(queue_name, jobs)

    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            async with client.claim(queue_name) as job:  # exits normally: acknowledged
                assert value(job) == 0
            with pytest.raises(RuntimeError, match="boom"):
                async with client.claim(queue_name, max_retries=0) as job:  # retries spent: dead-lettered
                    assert value(job) == 1
                    raise RuntimeError("boom")
            with pytest.raises(RuntimeError):
                async with client.claim(queue_name, max_retries=1) as job:  # retried: a copy at the back
                    raise RuntimeError("again")
            async with client.claim(queue_name, timeout=5) as job:
                assert job is not None and value(job) == 2 and job.attempts == 2
            async with client.claim(queue_name, timeout=0.05) as job:
                assert job is None
            letters = await client.dead_letters(queue_name)
            assert [value(letter.job) for letter in letters] == [1] and "boom" in letters[0].reason
            assert await client.requeue_dead_letters(queue_name) == 1
            assert value(await client.receive_message(queue_name, timeout=5)) == 1
            if backend != "rabbitmq":
                recorded = await client.get_job(jobs[0].id)
                assert recorded is not None and recorded.status is ExecutionStatus.COMPLETED

    asyncio.run(main())
    assert orchestrator.count_queue_messages(queue_name) == 0


# -- consuming ----------------------------------------------------------------------------------------


def test_consume_runs_async_handlers_on_the_loop_at_most_concurrency_at_once(
    orchestrator: Orchestrator, backend: str, queue_name: str
) -> None:
    # Given 12 jobs, and a handler whose first 4 runs wait until 4 run at once
    concurrency = 4
    orchestrator.declare_queue(queue_name)
    jobs = [make_job(n) for n in range(12)]
    orchestrator.publish_many(queue_name, jobs)

    async def main() -> None:
        loop_thread = threading.get_ident()
        running, peak, threads = 0, 0, set()
        full = asyncio.Event()
        events: list[tuple[int, JobEvent]] = []

        async def handler(job: Job) -> Doubled:
            nonlocal running, peak
            threads.add(threading.get_ident())
            running += 1
            peak = max(peak, running)
            if running == concurrency:
                full.set()
            await asyncio.wait_for(full.wait(), 30)
            running -= 1
            return Doubled(doubled=value(job) * 2)

        async with AsyncOrchestrator(orchestrator) as client:
            stats = await client.consume(
                queue_name, handler, concurrency=concurrency, until_empty=True,
                on_event=lambda event: events.append((threading.get_ident(), event)),
            )
            # Expect every job completed by handlers on the loop, exactly 4 at a time at most
            assert (stats.completed, stats.processed) == (12, 12)
            assert peak == concurrency and threads == {loop_thread}
            assert {thread for thread, _ in events} == {loop_thread} and len(events) == 12
            if backend != "rabbitmq":
                recorded = await client.get_job(jobs[5].id)
                assert recorded is not None and recorded.status is ExecutionStatus.COMPLETED
                assert recorded.payload.output == Doubled(doubled=10)

    asyncio.run(main())
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_consume_retries_dead_letters_and_cancels_handlers_past_their_time_limit(
    orchestrator: Orchestrator, queue_name: str
) -> None:
    # Given a job failing once, one always failing, and one that never finishes
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(3)])
    cancelled: list[int] = []

    async def handler(job: Job) -> None:
        if value(job) == 0 and job.attempts == 1:
            raise RuntimeError("flaky")
        if value(job) == 1:
            raise ValueError("broken")
        if value(job) == 2:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.append(job.attempts)

    async def main() -> None:
        async with AsyncOrchestrator(orchestrator) as client:
            stats = await client.consume(
                queue_name, handler, concurrency=3, until_empty=True, max_retries=1, retry_backoff=0.01,
                time_limit=0.3,
            )
            # Expect the sync Worker's outcomes, and the hanging handler cancelled at each attempt
            assert (stats.completed, stats.retried, stats.dead_lettered) == (1, 3, 2)
            assert cancelled == [1, 2]
            reasons = {value(letter.job): letter.reason for letter in await client.dead_letters(queue_name)}
            assert "ValueError: broken" in reasons[1]
            assert "TimeLimitExceeded: the job ran longer than its time limit of 0.3 s" in reasons[2]

    asyncio.run(main())


def test_cancelling_consume_is_a_warm_stop(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given a worker running a job
    orchestrator.declare_queue(queue_name)
    job = make_job(1)
    orchestrator.publish(queue_name, job)
    finished: list[str] = []

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def handler(job: Job) -> None:
            started.set()
            await release.wait()
            finished.append(job.id)

        async with AsyncOrchestrator(orchestrator) as client:
            consuming = asyncio.ensure_future(client.consume(queue_name, handler))
            await asyncio.wait_for(started.wait(), 30)
            # When its task is cancelled while the handler runs
            consuming.cancel()
            release.set()
            # Expect the job finished and acknowledged before the cancellation propagates
            with pytest.raises(asyncio.CancelledError):
                await consuming

    asyncio.run(main())
    assert finished == [job.id]
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_a_cold_stop_gives_the_job_back_and_cancels_its_handler(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))

    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(job: Job) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        worker = AsyncWorker(orchestrator, queue_name, handler)
        running = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(started.wait(), 30)
        worker.stop(cold=True)
        stats = await running
        assert (stats.returned, stats.processed) == (1, 0)
        await asyncio.wait_for(cancelled.wait(), 30)

    asyncio.run(main())
    assert value(orchestrator.receive_message(queue_name, timeout=10)) == 1


@pytest.fixture
def broker_calls_on_the_loop(orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backend and result-store methods called from a thread running an event loop: every
    blocking call the package makes goes through one of them."""
    found: list[str] = []

    def guarded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if asyncio._get_running_loop() is not None:
                found.append(name)
            return method(*args, **kwargs)
        return call

    for target in (orchestrator.backend, orchestrator.results):
        for name in dir(target):
            method = getattr(target, name)
            if not name.startswith("_") and inspect.ismethod(method):
                monkeypatch.setattr(target, name, guarded(f"{type(target).__name__}.{name}", method))
    return found


def run_in_thread(call: Callable[[], object]) -> None:
    """Run ``call`` on a thread of its own and raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


#: Attempts of the slow-callback check: a blocking call is slow in every run, a thread of this
#: process or another process descheduled on a loaded machine only now and then.
SLOW_CALLBACK_ATTEMPTS = 3


def test_nothing_blocks_the_event_loop(
    orchestrator: Orchestrator, queue_name: str, caplog: pytest.LogCaptureFixture,
    broker_calls_on_the_loop: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No broker or result-store call runs on the loop, and asyncio's debug mode logs no
    callback of 10 ms or more, during 2,000 publishes from 100 tasks and their consumption.

    Two pauses that are not calls on the loop are kept out of the run. A full garbage
    collection over pytest's heap: frozen out of the collector. And debug mode's own cost: for
    every future it creates it captures the stack and ``linecache.checkcache`` stats each source
    file on it; each stat lets the Worker's threads take the GIL, and the loop waits for it
    back (up to 5 ms a time). The loop runs on a thread of its own (a shallow stack, as in a
    service) and the check is off: files do not change during the run."""
    orchestrator.declare_queue(queue_name)
    monkeypatch.setattr(linecache, "checkcache", lambda filename=None: None)

    async def main() -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.01
        async with AsyncOrchestrator(orchestrator) as client:
            async def caller(number: int) -> None:
                for n in range(20):
                    await client.publish(queue_name, make_job(number * 100 + n))

            callers = []
            for number in range(CALLERS):  # one per step: debug mode captures a stack per task
                callers.append(asyncio.ensure_future(caller(number)))
                await asyncio.sleep(0)
            await asyncio.gather(*callers)
            assert await client.count_queue_messages(queue_name) == 2000

            async def handler(job: Job) -> None:
                await asyncio.sleep(0)

            stats = await client.consume(queue_name, handler, concurrency=4, prefetch=100, until_empty=True)
            assert stats.completed == 2000

    slow: list[str] = []
    for _ in range(SLOW_CALLBACK_ATTEMPTS):
        caplog.clear()
        gc.collect()
        gc.freeze()
        try:
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                run_in_thread(partial(asyncio.run, main(), debug=True))
        finally:
            gc.unfreeze()
        assert broker_calls_on_the_loop == []
        slow = [record.getMessage() for record in caplog.records if "took" in record.getMessage()]
        if not slow:
            break
    assert slow == []


# -- construction and closing (in-process) ---------------------------------------------------------------


def test_constructors_and_who_closes_what(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = f"memory:///{unique('broker')}"
    queue = unique()
    monkeypatch.setenv("MINDTRACE_BROKER_URL", broker)
    observer = Orchestrator(LocalClient(broker.rsplit("/", 1)[1]))
    observer.declare_queue(queue)
    observer.publish_many(queue, [make_job(1), make_job(2)])

    async def main() -> None:
        # An AsyncOrchestrator built from a URL owns its Orchestrator: close() puts back a claimed job
        owned = AsyncOrchestrator.from_url(broker)
        assert value(await owned.claim(queue).__aenter__()) == 1
        assert observer.count_queue_messages(queue) == 1
        await owned.close()
        assert observer.count_queue_messages(queue) == 2
        with pytest.raises(RuntimeError):
            await owned.count_queue_messages(queue)
        # One wrapping an Orchestrator leaves it open
        wrapped_orchestrator = Orchestrator.from_env()
        async with AsyncOrchestrator(wrapped_orchestrator) as wrapped:
            assert value(await wrapped.claim(queue).__aenter__()) == 1
        assert observer.count_queue_messages(queue) == 1
        wrapped_orchestrator.close()
        assert observer.count_queue_messages(queue) == 2
        async with AsyncOrchestrator.from_env(routes={"default": queue}) as from_env:
            assert from_env.route(make_job()) == queue

    asyncio.run(main())
    observer.delete_queue(queue)
    observer.close()


def test_bad_options_are_refused_before_the_broker_is_used() -> None:
    with pytest.raises(InvalidArgument):
        AsyncOrchestrator(max_threads=1)
    with pytest.raises(TypeError):
        AsyncOrchestrator(Orchestrator(), routes={})

    async def main() -> None:
        async with AsyncOrchestrator() as client:
            queue = unique()
            for options in ({"pool": "processes"}, {"concurrency": 0}, {"time_limit": 0}):
                with pytest.raises(InvalidArgument):
                    await client.consume(queue, _noop, **options)
            with pytest.raises(InvalidArgument):
                await client.publish(queue, make_job(), confirm="yes")  # type: ignore[arg-type]

    asyncio.run(main())


async def _noop(job: Job) -> None:
    return None
