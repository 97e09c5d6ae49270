"""Group commit: concurrent publishes to one queue share broker calls, each thread's jobs keep
their order, and every caller gets the outcome of the call that carried its jobs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.clients import Client
from mindtrace_kombu.group_commit import GroupCommit

from .conftest import make_job, wait_until

pytestmark = pytest.mark.timeout(60)


def run_senders(commit: GroupCommit[int], send: "Send", values: Sequence[int]) -> list[BaseException | None]:
    """One thread per value sends it; returns what each raised."""
    outcomes: list[BaseException | None] = [None] * len(values)

    def sender(index: int) -> None:
        try:
            commit.send("key", [values[index]], send)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[index] = exc

    threads = [threading.Thread(target=sender, args=(index,)) for index in range(len(values))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


class Send:
    """A send whose first call is held until released; records every call's items."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.fail_with = fail_with

    def __call__(self, items: Sequence[int]) -> None:
        if not self.calls:
            self.calls.append(list(items))
            self.release.wait(30)
        else:
            self.calls.append(list(items))
        if self.fail_with is not None and len(self.calls) == 2:
            raise self.fail_with


def test_callers_arriving_during_a_call_share_the_next_one() -> None:
    """Given a send in progress (held)
    When 7 more threads send to the same key meanwhile
    Expect exactly two calls: the first alone, then the 7 together"""
    commit: GroupCommit[int] = GroupCommit()
    send = Send()
    first = threading.Thread(target=commit.send, args=("key", [0], send))
    first.start()
    wait_until(lambda: len(send.calls) == 1)
    others = threading.Thread(target=lambda: run_senders(commit, send, list(range(1, 8))))
    others.start()
    wait_until(lambda: commit.waiting("key") == 7)
    send.release.set()
    first.join(30)
    others.join(30)

    assert send.calls[0] == [0]
    assert sorted(send.calls[1]) == list(range(1, 8)) and len(send.calls) == 2
    assert commit.waiting("key") == 0


def test_a_failed_call_fails_exactly_its_callers() -> None:
    """Given a held first call, and 3 callers queued behind it whose shared call fails
    Expect those 3 to raise the error, and the first caller to succeed"""
    commit: GroupCommit[int] = GroupCommit()
    send = Send(fail_with=ConnectionError("broker gone"))
    outcome: list[BaseException | None] = []
    first = threading.Thread(target=lambda: outcome.extend(run_senders(commit, send, [0])))
    first.start()
    wait_until(lambda: len(send.calls) == 1)
    queued: list[BaseException | None] = []
    others = threading.Thread(target=lambda: queued.extend(run_senders(commit, send, [1, 2, 3])))
    others.start()
    wait_until(lambda: commit.waiting("key") == 3)
    send.release.set()
    first.join(30)
    others.join(30)

    assert outcome == [None]
    assert [type(error) for error in queued] == [ConnectionError] * 3


def test_concurrent_publishes_arrive_once_each_in_per_thread_order(client: Client, queue_name: str) -> None:
    """Given 8 threads publishing 25 jobs each to one queue on one orchestrator
    Expect all 200 jobs on the queue, each once, every thread's jobs in its publish order"""
    orchestrator = Orchestrator(client)
    try:
        orchestrator.declare_queue(queue_name)

        def publish(thread: int) -> None:
            for index in range(25):
                orchestrator.publish(queue_name, make_job(thread * 100 + index))

        threads = [threading.Thread(target=publish, args=(thread,)) for thread in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert orchestrator.count_queue_messages(queue_name) == 200
        values = [orchestrator.receive_message(queue_name).payload.input.value for _ in range(200)]  # type: ignore[union-attr]
        assert sorted(values) == sorted(thread * 100 + index for thread in range(8) for index in range(25))
        for thread in range(8):
            mine = [value for value in values if value // 100 == thread]
            assert mine == sorted(mine)
    finally:
        orchestrator.delete_queue(queue_name)
        orchestrator.close()
