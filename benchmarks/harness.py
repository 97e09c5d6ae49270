"""Timing helpers, run settings and the report tables shared by every scenario.

Each scenario returns :class:`Result` rows. A rate is operations per wall-clock second; where each
call is timed on its own, the row also carries latency percentiles (p50, p99) in microseconds.
Ratios are always ``rate(numerator) / rate(denominator)``: above 1 means the numerator is faster.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TextIO

#: Body of every raw and stock-Kombu message: a JSON document of exactly 1,024 bytes.
PAYLOAD: dict[str, str] = {"name": "bench", "data": ""}
PAYLOAD["data"] = "x" * (1024 - len(json.dumps(PAYLOAD)))
BODY: bytes = json.dumps(PAYLOAD).encode()

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class Settings:
    """What one run measures and where; brokers come from ``REDIS_URL``, ``AMQP_URL`` and
    ``REDIS_CLUSTER_URL``."""

    n: int
    batch: int = 100
    prefetch: int = 100
    small_backlog: int = 1_000
    big_backlog: int = 1_000_000
    redis_url: str = field(default_factory=lambda: os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    amqp_url: str = field(default_factory=lambda: os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    #: A Redis Cluster's ``rediscluster://`` URL; without one, the run starts a 6-node cluster.
    cluster_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_CLUSTER_URL"))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def queue_name(self, scenario: str) -> str:
        """Return a queue name unique to this run, e.g. ``bench-1a2b3c4d-kombu-redis``."""
        return f"bench-{self.run_id}-{scenario}"

    @property
    def pyamqp_url(self) -> str:
        """The AMQP URL with the ``pyamqp://`` scheme, so Kombu and Celery use py-amqp."""
        return "pyamqp://" + self.amqp_url.split("://", 1)[1]


@dataclass(frozen=True)
class Result:
    """One measured scenario: ``ops`` operations in ``seconds`` of wall-clock time."""

    backend: str
    name: str
    ops: int
    seconds: float
    p50_us: float | None = None
    p99_us: float | None = None
    note: str = ""

    @property
    def key(self) -> str:
        """The name ratios refer to: ``backend/name``."""
        return f"{self.backend}/{self.name}"

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.ops / self.seconds


class Scenario(NamedTuple):
    """A named group of measurements on one backend."""

    label: str
    run: Callable[[Settings], list[Result]]


class Skipped(Exception):
    """Raised by a scenario that cannot run here; the message says why."""


@dataclass(frozen=True)
class Ratio:
    """A row of the ratio table: ``rate(numerator) / rate(denominator)``, both result keys."""

    label: str
    numerator: str
    denominator: str


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q``-th percentile (0 < q <= 100) of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def from_samples(
    backend: str, name: str, samples: Sequence[float], seconds: float, ops: int, note: str = ""
) -> Result:
    """Build a result whose percentiles come from per-call ``samples`` in seconds."""
    return Result(
        backend,
        name,
        ops,
        seconds,
        percentile(samples, 50) * 1e6,
        percentile(samples, 99) * 1e6,
        note,
    )


def time_each(
    backend: str,
    name: str,
    op: Callable[[], object],
    n: int,
    *,
    warmup: int = 0,
    finish: Callable[[], object] | None = None,
    note: str = "",
) -> Result:
    """Call ``op`` ``n`` times, timing each call.

    ``warmup`` untimed calls come first. ``finish`` (e.g. a round trip that waits until the broker
    holds everything sent) runs after the last call and counts toward the total, not the samples.
    """
    for _ in range(warmup):
        op()
    clock = time.perf_counter
    samples: list[float] = []
    start = clock()
    for _ in range(n):
        t0 = clock()
        op()
        samples.append(clock() - t0)
    if finish is not None:
        finish()
    return from_samples(backend, name, samples, clock() - start, n, note)


def time_batched(
    backend: str, name: str, op: Callable[[int], object], n: int, batch: int, *, note: str = ""
) -> Result:
    """Call ``op(batch)`` ``ceil(n / batch)`` times; ops count items, percentiles are per batch."""
    calls = math.ceil(n / batch)
    clock = time.perf_counter
    samples: list[float] = []
    start = clock()
    for _ in range(calls):
        t0 = clock()
        op(batch)
        samples.append(clock() - t0)
    return from_samples(backend, name, samples, clock() - start, calls * batch, note)


def time_total(backend: str, name: str, op: Callable[[], int], *, note: str = "") -> Result:
    """Run ``op`` once; it performs the whole workload and returns how many operations it did."""
    start = time.perf_counter()
    ops = op()
    return Result(backend, name, ops, time.perf_counter() - start, note=note)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` every millisecond until true; raise ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(0.001)


def ratio_value(by_key: dict[str, Result], ratio: Ratio) -> float | None:
    """Return the ratio's value, or None when either side was not measured."""
    num, den = by_key.get(ratio.numerator), by_key.get(ratio.denominator)
    return None if num is None or den is None else num.rate / den.rate


def _fmt_us(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _print_rows(
    out: TextIO, header: Sequence[str], align: str, rows: Iterable[Sequence[str]]
) -> None:
    """Print an aligned text table; ``align`` holds one ``l`` or ``r`` per column."""
    table = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        print("  ".join(cells).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_report(results: Sequence[Result], ratios: Sequence[Ratio], out: TextIO) -> None:
    """Print the rate table, then the ratio table (unmeasured ratios show ``n/a``)."""
    _print_rows(
        out,
        ["backend", "scenario", "ops", "ops/s", "p50 us", "p99 us", "note"],
        "llrrrrl",
        (
            [
                r.backend,
                r.name,
                f"{r.ops:,}",
                f"{r.rate:,.0f}",
                _fmt_us(r.p50_us),
                _fmt_us(r.p99_us),
                r.note,
            ]
            for r in results
        ),
    )
    by_key = {r.key: r for r in results}
    print(file=out)
    rows = []
    for ratio in ratios:
        value = ratio_value(by_key, ratio)
        backend = ratio.numerator.split("/", 1)[0]
        rows.append([backend, ratio.label, "n/a" if value is None else f"{value:.2f}x"])
    _print_rows(out, ["backend", "ratio (rates from the table above)", "value"], "llr", rows)


def to_json(results: Sequence[Result], ratios: Sequence[Ratio], extra: dict[str, Any]) -> str:
    """Serialize a run: results with their rates, ratios with their values, plus ``extra``."""
    by_key = {r.key: r for r in results}
    return json.dumps(
        {
            **extra,
            "results": [{**asdict(r), "key": r.key, "rate": r.rate} for r in results],
            "ratios": [{**asdict(q), "value": ratio_value(by_key, q)} for q in ratios],
        },
        indent=2,
    )
