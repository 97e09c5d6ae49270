"""The asyncio API: what coalescing gains, and how long the event loop is ever held up.

* :data:`ASYNC_PUBLISH` -- ``s.n`` jobs published by :data:`TASKS` concurrent tasks, each awaiting
  ``AsyncOrchestrator.publish`` one job after the other (concurrent publishes to a queue share
  ``publish_many`` calls); :data:`SYNC_PUBLISH_SEQUENTIAL` -- the same number of sync ``publish``
  calls one after the other, measured in the same scenario on the same orchestrator. Ratio:
  ``rate(ASYNC_PUBLISH) / rate(SYNC_PUBLISH_SEQUENTIAL)``.
* :data:`LOOP_STALL` -- ``s.n`` jobs built and published by the tasks, as a service would, then
  consumed by an async handler (``consume(until_empty=True)``). Every callback the loop runs is
  timed (``Handle._run``, what debug mode's slow-callback check times): the note gives the longest
  (the longest the loop was held by one piece of work: its stall), then how late a heartbeat task
  sleeping 1 ms at a time woke (max and p99: the stall plus the callbacks queued before it, here
  the 100 tasks' own work) and the same heartbeat's largest lateness on the idle loop just before
  (the machine's own noise). The objects that exist before the run (modules, the harness) are
  frozen out of the garbage collector (``gc.freeze()``, as long-running services do after
  start-up): a full collection over them is a pause of any Python process, not of the run.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from benchmarks.harness import Result, Scenario, Settings, from_samples, percentile, time_each
from benchmarks.names import ASYNC_PUBLISH, LOOP_STALL, SYNC_PUBLISH_SEQUENTIAL
from benchmarks.project import bench_job, declared, expect_count
from mindtrace_kombu import AsyncOrchestrator, Job

#: Concurrent publishing tasks.
TASKS = 100
#: The heartbeat's sleep, seconds.
_BEAT = 0.001
#: Seconds the idle loop is watched for the noise baseline.
_IDLE = 1.0


async def _publish_from_tasks(
    client: AsyncOrchestrator, queue: str, count: int, job_at: Callable[[int], Job]
) -> list[float]:
    """Publish ``job_at(i)`` for ``i`` in ``range(count)`` from :data:`TASKS` tasks, each awaiting
    one publish at a time; returns each publish's latency in seconds."""
    samples: list[float] = []

    async def task(first: int) -> None:
        for index in range(first, count, TASKS):
            job = job_at(index)
            start = time.perf_counter()
            await client.publish(queue, job)
            samples.append(time.perf_counter() - start)

    await asyncio.gather(*map(task, range(TASKS)))
    return samples


def publish_rates(s: Settings, backend: str) -> list[Result]:
    """Sequential sync publishes, then as many async ones from :data:`TASKS` tasks, one queue."""
    sync_jobs = iter([bench_job() for _ in range(s.n + 1)])
    async_jobs = [bench_job() for _ in range(s.n)]
    with declared(s, backend, "async-publish") as (orchestrator, queue):
        sync = time_each(
            backend, SYNC_PUBLISH_SEQUENTIAL, lambda: orchestrator.publish(queue, next(sync_jobs)), s.n, warmup=1
        )

        async def run() -> Result:
            async with AsyncOrchestrator(orchestrator) as client:
                start = time.perf_counter()
                samples = await _publish_from_tasks(client, queue, s.n, async_jobs.__getitem__)
                seconds = time.perf_counter() - start
            return from_samples(backend, ASYNC_PUBLISH, samples, seconds, s.n, f"{TASKS} tasks, coalesced")

        coalesced = asyncio.run(run())
        expect_count(orchestrator, queue, 2 * s.n + 1)
    return [sync, coalesced]


class _Heartbeat:
    """A task sleeping :data:`_BEAT` at a time, noting how late each wake-up came."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(_BEAT)
            self.lateness.append(max(time.perf_counter() - start - _BEAT, 0.0))

    async def stop(self) -> list[float]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.lateness


@contextmanager
def _longest_callback() -> Iterator[list[float]]:
    """Time every callback event loops run meanwhile; yields ``[longest so far, in seconds]``."""
    longest = [0.0]
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        start = time.perf_counter()
        try:
            run(handle)
        finally:
            longest[0] = max(longest[0], time.perf_counter() - start)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign, assignment]
    try:
        yield longest
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]


def loop_stall(s: Settings, backend: str) -> list[Result]:
    """The longest the event loop was held up while ``s.n`` jobs were published and consumed."""
    with declared(s, backend, "async-stall") as (orchestrator, queue):

        async def handler(job: Job) -> None:
            await asyncio.sleep(0)

        async def run() -> tuple[float, float, list[float], list[float]]:
            idle = _Heartbeat()
            await asyncio.sleep(_IDLE)
            noise = await idle.stop()
            async with AsyncOrchestrator(orchestrator) as client:
                heartbeat = _Heartbeat()
                with _longest_callback() as longest:
                    start = time.perf_counter()
                    await _publish_from_tasks(client, queue, s.n, lambda index: bench_job())
                    stats = await client.consume(queue, handler, concurrency=8, prefetch=s.prefetch, until_empty=True)
                    seconds = time.perf_counter() - start
                lateness = await heartbeat.stop()
            if stats.completed != s.n:
                raise RuntimeError(f"{stats.completed} of {s.n} jobs completed")
            return seconds, longest[0], lateness, noise

        gc.freeze()
        try:
            seconds, stall, lateness, noise = asyncio.run(run())
        finally:
            gc.unfreeze()
        expect_count(orchestrator, queue, 0)
    note = (
        f"max loop stall {stall * 1e3:.1f} ms; heartbeat late max {max(lateness) * 1e3:.1f} ms, "
        f"p99 {percentile(lateness, 99) * 1e3:.1f} ms (idle loop max {max(noise) * 1e3:.1f} ms)"
    )
    return [Result(backend, LOOP_STALL, s.n, seconds, note=note)]


def scenarios(backend: str) -> list[Scenario]:
    """The asyncio API's scenarios on ``backend``."""
    return [
        Scenario("async publish vs sync", partial(publish_rates, backend=backend)),
        Scenario("async loop stall", partial(loop_stall, backend=backend)),
    ]
