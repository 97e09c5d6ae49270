"""Poison messages: every kind of message that is not a job, injected as raw bytes in the
broker's own format (redis-py on Redis, py-amqp on RabbitMQ, the store's publish in-process),
is dead-lettered byte for byte with its reason; the worker stays alive and processes the good
jobs around them; ``receive_message`` raises ``JobDecodeError`` and loses none of them."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
import pytest

from mindtrace_kombu import Job, JobDecodeError, Orchestrator, Worker
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.backends.redis import RedisBackend
from mindtrace_kombu.backends.wire import delivery_tag, encode_payload
from mindtrace_kombu.serialization import CONTENT_TYPE, dumps

from .conftest import broker_url, make_client, make_job

BOMB_BYTES = 200 * 1024 * 1024
GZIP = "application/x-gzip"


def job_bytes(value: int = 0, **envelope: Any) -> bytes:
    encoded = json.loads(dumps(make_job(value)))
    encoded.update(envelope)
    return json.dumps(encoded).encode()


def bomb(size: int = BOMB_BYTES) -> bytes:
    """``size`` bytes of zlib-compressed zeros (about 0.2 MB for 200 MiB)."""
    compressor, block = zlib.compressobj(9), b"0" * (1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()


@dataclass(frozen=True)
class Poison:
    """A message that is not a job, and the reason it must be dead-lettered with."""

    name: str
    reason: str  # a regular expression the dead letter's reason matches
    body: bytes = b""
    content_type: str = CONTENT_TYPE
    encoding: str = "utf-8"
    headers: dict[str, Any] = field(default_factory=dict)


MESSAGE_POISONS = [
    Poison("invalid JSON", "cannot decode body", b'{"mindtrace_job": 1, "job": '),
    Poison("wrong content type", r"content type 'application/json' is not a job", job_bytes(), "application/json"),
    Poison("pickle", r"content type 'application/x-python-serialize'", b"\x80\x04K\x01.",
           "application/x-python-serialize", "binary"),
    Poison("forged type name", "forged type name 'os.system'", job_bytes(input_type="os.system")),
    Poison("missing required fields", "cannot decode body",
           b'{"mindtrace_job": 1, "input_type": null, "output_type": null, "job": {"payload": {}}}'),
    Poison("not UTF-8", "cannot decode body", b"\xff\xfe\xfa\x00"),
    Poison("empty body", "body decodes to bytes, not a Job", b""),
    Poison("20 MB body", "oversize: 20000000 bytes", b" " * 20_000_000),
    Poison("unknown compression", "unsupported compression 'application/x-snappy'", job_bytes(),
           headers={"compression": "application/x-snappy"}),
    Poison("mismatching compression", "not valid application/x-gzip data", job_bytes(), headers={"compression": GZIP}),
    Poison("decompression bomb", "decompression bomb", bomb(), headers={"compression": GZIP}),
]


def stored_payload(body: object, **changes: Any) -> bytes:
    """A virtual-transport payload as Kombu stores it on Redis, with ``changes`` applied."""
    payload = encode_payload(WireMessage(job_bytes(), CONTENT_TYPE, "utf-8"), "", "q", None, delivery_tag())
    payload["body"] = body
    properties = changes.pop("properties", {})
    payload.update(changes)
    payload["properties"].update(properties)
    return json.dumps(payload).encode()


#: Redis only: the stored envelope itself is broken (the dead letter keeps these bytes).
ENVELOPE_POISONS = [
    Poison("not a Kombu message", "not a Kombu message", b"\x00\x01 raw bytes written by hand"),
    Poison("unknown body encoding", "unknown body_encoding 'rot13'",
           stored_payload("abc", properties={"body_encoding": "rot13"})),
    Poison("invalid base64", "not valid base64", stored_payload("!!not base64!!")),
    Poison("non-object headers", "headers is str, not an object",
           stored_payload(base64.b64encode(job_bytes()).decode(), headers="oops")),
    Poison("non-object delivery_info", "delivery_info is list, not an object",
           stored_payload(base64.b64encode(job_bytes()).decode(), properties={"delivery_info": [1]})),
]

Inject = Callable[[Poison], None]


@pytest.fixture
def inject(orchestrator: Orchestrator, backend: str, queue_name: str) -> Iterator[Inject]:
    """Put a poison on ``queue_name`` as raw bytes in the broker's own format."""
    orchestrator.declare_queue(queue_name)
    if backend == "rabbitmq":
        connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
        connection.connect()
        channel = connection.channel()
        channel.confirm_select()  # each publish returns once the broker holds the message

        def put(poison: Poison) -> None:
            message = amqp.Message(
                poison.body, content_type=poison.content_type, content_encoding=poison.encoding,
                application_headers=poison.headers, delivery_mode=2,
            )
            channel.basic_publish(message, exchange="", routing_key=queue_name)

        yield put
        connection.close()
        return
    if backend == "redis":
        assert isinstance(orchestrator.backend, RedisBackend)
        store = orchestrator.backend.store

        def put(poison: Poison) -> None:
            if poison in ENVELOPE_POISONS:
                raw = poison.body
            else:
                message = WireMessage(poison.body, poison.content_type, poison.encoding, poison.headers)
                raw = json.dumps(encode_payload(message, "", queue_name, None, delivery_tag())).encode()
            store.put(queue_name, [(raw, 0)])  # redis-py, the bytes as given

        yield put
        return

    def put(poison: Poison) -> None:
        message = WireMessage(poison.body, poison.content_type, poison.encoding, poison.headers)
        orchestrator.backend.publish(queue_name, [message], None)

    yield put


def poisons_for(backend: str) -> list[Poison]:
    return MESSAGE_POISONS + (ENVELOPE_POISONS if backend == "redis" else [])


def compressed_job(value: int) -> Poison:
    """A good job, gzip-compressed as ``Producer.publish(compression="gzip")`` sends it."""
    return Poison("compressed job", "", zlib.compress(job_bytes(value)), headers={"compression": GZIP})


def test_worker_dead_letters_every_poison_and_processes_the_jobs_around_them(
    orchestrator: Orchestrator, backend: str, queue_name: str, inject: Inject
) -> None:
    # Given every poison of this backend between good jobs (one of them compressed)
    poisons = poisons_for(backend)
    good: list[str] = []
    for number, poison in enumerate(poisons):
        good.append(orchestrator.publish(queue_name, make_job(number)))
        inject(poison)
    inject(compressed_job(999))
    good.append(orchestrator.publish(queue_name, make_job(1000)))
    done: list[Job] = []

    # When one worker consumes the queue
    stats = Worker(orchestrator, queue_name, done.append, max_retries=0).run(until_empty=True)

    # Expect every good job processed (the compressed one decompressed), every poison dead-lettered
    assert sorted(job.payload.input.value for job in done) == sorted([*range(len(poisons)), 999, 1000])
    assert stats.completed == len(good) + 1 and stats.dead_lettered == len(poisons)
    assert orchestrator.count_queue_messages(queue_name) == 0
    letters = orchestrator.dead_letters(queue_name)
    assert len(letters) == len(poisons)
    for poison, letter in zip(poisons, letters):
        # ... readable back, byte for byte as the broker held it, with its reason
        assert re.search(poison.reason, letter.reason), (poison.name, letter.reason)
        assert letter.body == poison.body, poison.name
        assert letter.job is None
    bomb_letter = letters[[p.name for p in poisons].index("decompression bomb")]
    assert bomb_letter.headers["compression"] == GZIP  # still compressed, under its own label


def test_receive_message_raises_for_every_poison_and_loses_none(
    orchestrator: Orchestrator, backend: str, queue_name: str, inject: Inject
) -> None:
    poisons = poisons_for(backend)
    for poison in poisons:
        inject(poison)
    inject(compressed_job(7))

    for poison in poisons:
        with pytest.raises(JobDecodeError) as caught:
            orchestrator.receive_message(queue_name, timeout=10)
        assert re.search(poison.reason, caught.value.reason), (poison.name, caught.value.reason)
        assert caught.value.dead_letter_queue == f"{queue_name}.dlq"
    job = orchestrator.receive_message(queue_name, timeout=10)
    assert job is not None and job.payload.input.value == 7

    assert orchestrator.count_queue_messages(queue_name) == 0
    assert [letter.body for letter in orchestrator.dead_letters(queue_name)] == [p.body for p in poisons]


def test_claim_dead_letters_a_poison(orchestrator: Orchestrator, backend: str, queue_name: str, inject: Inject) -> None:
    inject(MESSAGE_POISONS[0])
    with pytest.raises(JobDecodeError), orchestrator.claim(queue_name, timeout=10):
        pytest.fail("a poison must not reach the block")
    assert orchestrator.count_queue_messages(queue_name) == 0
    assert orchestrator.count_queue_messages(f"{queue_name}.dlq") == 1


BOMB_WORKER = Path(__file__).with_name("bomb_worker.py")


def test_decompression_bomb_costs_the_worker_at_most_the_limit(backend: str) -> None:
    # A worker process with a 16 MiB decompression limit meets 200 MiB of gzip (0.2 MB on the wire)
    limit, margin = 16 * 1024 * 1024, 32 * 1024 * 1024
    url = broker_url(backend)
    make_client(backend)  # skips (or fails) when the broker is unreachable
    env = {**os.environ, "PYTHONPATH": str(BOMB_WORKER.parent.parent)}
    result = subprocess.run(
        [sys.executable, str(BOMB_WORKER), backend, url, str(limit)], capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dead_lettered"] == 1 and report["completed"] == 1
    assert "decompression bomb" in report["reason"]
    # the peak resident memory grew by less than the limit plus a fixed margin while consuming
    assert report["peak_rss"] - report["rss_before"] < limit + margin, report
