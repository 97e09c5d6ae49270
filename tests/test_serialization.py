"""Unit tests of the Kombu serializer for jobs (docs/architecture.md, "The serializer").

Real parts only: the registered serializer, Kombu's own ``dumps``/``loads`` with ``accept=``
lists, the installed package metadata, and subprocesses that have not imported a payload class.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from kombu import Producer
from kombu import serialization as kombu_serialization
from kombu.exceptions import ContentDisallowed, DecodeError

from mindtrace_kombu import Job, JobDecodeError, JobInput, JobOutput, JobSchema, JobType, LocalClient, Orchestrator
from mindtrace_kombu.models import payload_type_name
from mindtrace_kombu.serialization import ACCEPT, CONTENT_TYPE, SERIALIZER, dumps, loads, register_args

from .conftest import unique

ROOT = Path(__file__).resolve().parents[1]
PICKLE_CONTENT_TYPE = "application/x-python-serialize"


class TrainInput(JobInput):
    dataset: str
    epochs: int = 10
    layers: list[int] = [64, 32]


class TrainOutput(JobOutput):
    accuracy: float
    model_path: str | None = None


def training_job() -> Job:
    return Job(
        id="train-1",
        name="train",
        job_type=JobType.ML_TRAINING,
        payload=JobSchema(
            name="training",
            input=TrainInput(dataset="s3://bucket/data", epochs=3, note={"free": "form"}),
            output=TrainOutput(accuracy=0.93, model_path="/m.pt"),
        ),
        created_at="2024-01-01T00:00:00",
        attempts=2,
    )


def forge(encoded: str, **envelope: object) -> str:
    """Rewrite fields of an encoded job's envelope, as a forger would."""
    data = json.loads(encoded)
    data.update(envelope)
    return json.dumps(data)


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_keeps_input_and_output_subclasses_and_every_field() -> None:
    # Given a job whose payload holds a JobInput and a JobOutput subclass, with an extra field
    job = training_job()
    # When it is encoded and decoded
    decoded = loads(dumps(job))
    # Expect the same classes and the same values
    assert isinstance(decoded, Job)
    assert type(decoded.payload.input) is TrainInput
    assert type(decoded.payload.output) is TrainOutput
    assert decoded.model_dump() == job.model_dump()
    assert decoded.payload.input.model_extra == {"note": {"free": "form"}}


def test_round_trip_through_kombu_registry_with_accept_list() -> None:
    job = training_job()
    content_type, encoding, body = kombu_serialization.dumps(job, serializer=SERIALIZER)
    assert (content_type, encoding) == (CONTENT_TYPE, "utf-8")
    decoded = kombu_serialization.loads(body, content_type, encoding, accept=ACCEPT)
    assert type(decoded.payload.input) is TrainInput
    assert decoded.model_dump() == job.model_dump()


def test_envelope_names_the_payload_types() -> None:
    envelope = json.loads(dumps(training_job()))
    assert envelope["mindtrace_job"] == 1
    assert envelope["input_type"] == payload_type_name(TrainInput)
    assert envelope["output_type"] == payload_type_name(TrainOutput)
    assert envelope["job"]["payload"]["input"]["dataset"] == "s3://bucket/data"


def test_structures_holding_jobs_and_models_round_trip() -> None:
    # A Celery task body or result: a JSON structure with jobs and pydantic models inside
    job = training_job()
    decoded = loads(dumps({"args": [job], "kwargs": {"out": TrainOutput(accuracy=1.0)}, "n": 3}))
    assert decoded["n"] == 3
    assert decoded["args"][0].model_dump() == job.model_dump()
    assert decoded["kwargs"]["out"] == TrainOutput(accuracy=1.0)


# -- a consumer that does not know the payload class --------------------------------------------


def test_unregistered_type_name_yields_generic_input_with_every_field() -> None:
    # Given a message naming a class this process never imported
    encoded = forge(dumps(training_job()), input_type="some_other_app.tasks.TrainInput",
                    output_type="some_other_app.tasks.TrainOutput")
    decoded = loads(encoded)
    # Expect generic base classes holding every field as extra fields
    assert type(decoded.payload.input) is JobInput
    assert decoded.payload.input.model_dump() == {
        "dataset": "s3://bucket/data", "epochs": 3, "layers": [64, 32], "note": {"free": "form"},
    }
    assert type(decoded.payload.output) is JobOutput
    assert decoded.payload.output.model_dump() == {"accuracy": 0.93, "model_path": "/m.pt"}


_DECODE_IN_FRESH_PROCESS = """
import json, sys
from mindtrace_kombu.serialization import loads
job = loads(sys.stdin.read())
print(json.dumps({
    "input_class": type(job.payload.input).__name__,
    "output_class": type(job.payload.output).__name__,
    "input": job.payload.input.model_dump(),
    "output": job.payload.output.model_dump(),
    "test_module_loaded": "tests.test_serialization" in sys.modules,
}))
"""


def test_process_without_the_subclass_gets_every_field() -> None:
    # Given a consumer process that imports only mindtrace_kombu
    result = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_FRESH_PROCESS], input=dumps(training_job()),
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )
    seen = json.loads(result.stdout)
    # Expect generic classes with all the values, and the class's module never imported
    assert seen["input_class"] == "JobInput" and seen["output_class"] == "JobOutput"
    assert seen["input"] == {"dataset": "s3://bucket/data", "epochs": 3, "layers": [64, 32], "note": {"free": "form"}}
    assert seen["output"] == {"accuracy": 0.93, "model_path": "/m.pt"}
    assert seen["test_module_loaded"] is False


# -- forged type names -----------------------------------------------------------------------------


@pytest.fixture
def booby_trapped_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An importable module whose import (or whose class's use) leaves a marker file."""
    name = f"trap_{unique('mod').replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class Payload:\n"
        "    @classmethod\n"
        "    def model_validate(cls, data):\n"
        f"        Path({str(marker)!r}).write_text('called')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, marker


def test_forged_importable_type_name_is_never_imported(booby_trapped_module: tuple[str, Path]) -> None:
    # Given a message naming an importable class that is not in the registry
    module, marker = booby_trapped_module
    encoded = forge(dumps(training_job()), input_type=f"{module}.Payload", output_type=f"{module}.Payload")
    decoded = loads(encoded)
    # Expect the module untouched and the generic classes used
    assert not marker.exists()
    assert module not in sys.modules
    assert type(decoded.payload.input) is JobInput
    assert type(decoded.payload.output) is JobOutput


def test_forged_model_name_in_a_structure_is_never_imported(booby_trapped_module: tuple[str, Path]) -> None:
    module, marker = booby_trapped_module
    decoded = loads(json.dumps({"x": {"mindtrace_model": f"{module}.Payload", "data": {"a": 1}}}))
    assert not marker.exists()
    assert module not in sys.modules
    assert decoded == {"x": {"a": 1}}


def test_type_name_of_a_loaded_callable_is_forged_and_runs_nothing(tmp_path: Path) -> None:
    # Given a job whose input "type" names a callable and whose fields would be a shell command
    marker = tmp_path / "pwned"
    job = Job(name="forged", payload=JobSchema(name="s", input=JobInput(command=f"touch {marker}")))
    for type_name in ("os.system", "builtins.eval", "subprocess.Popen", "os.path.join"):
        # Expect the message refused as forged, and no command run
        with pytest.raises(ValueError, match="forged type name"):
            loads(forge(dumps(job), input_type=type_name))
        assert not marker.exists()


def test_type_name_unknown_to_this_process_yields_the_generic_input() -> None:
    # A type of another service's code (not loaded here) keeps every field as an extra field
    job = Job(name="other", payload=JobSchema(name="s", input=JobInput(size=3)))
    for type_name in ("other_service.models.ResizeInput", "os:system", "os.no_such_function"):
        decoded = loads(forge(dumps(job), input_type=type_name))
        assert type(decoded.payload.input) is JobInput
        assert decoded.payload.input.model_dump() == {"size": 3}


def test_registered_name_of_the_wrong_base_is_forged() -> None:
    # An output class named as the input type must not be instantiated as the input
    encoded = forge(dumps(training_job()), input_type=payload_type_name(TrainOutput))
    with pytest.raises(ValueError, match="forged type name"):
        loads(encoded)


@pytest.mark.parametrize("type_name", [None, 42, ["a"], {"b": 1}])
def test_non_string_type_names_yield_generic_input(type_name: object) -> None:
    decoded = loads(forge(dumps(training_job()), input_type=type_name))
    assert type(decoded.payload.input) is JobInput


# -- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/x-yaml", "text/plain"])
def test_kombu_refuses_other_content_types_with_our_accept_list(content_type: str) -> None:
    with pytest.raises(ContentDisallowed):
        kombu_serialization.loads(b'{"mindtrace_job": 1}', content_type, "utf-8", accept=ACCEPT)


def test_accept_list_is_only_the_job_content_type() -> None:
    assert ACCEPT == [CONTENT_TYPE] == ["application/x-mindtrace-job+json"]


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (self.marker, "unpickled"))  # type: ignore[return-value]


def test_pickle_is_never_accepted_by_kombu(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    body = pickle.dumps(_Exploit(marker))
    with pytest.raises(ContentDisallowed):
        kombu_serialization.loads(body, PICKLE_CONTENT_TYPE, "binary", accept=ACCEPT)
    assert PICKLE_CONTENT_TYPE not in ACCEPT and "pickle" not in ACCEPT
    assert not marker.exists()


def test_pickle_body_on_a_queue_is_dead_lettered_not_unpickled(tmp_path: Path) -> None:
    # Given a pickled message on a real (in-process) queue
    marker = tmp_path / "unpickled"
    client = LocalClient(broker_id=unique("pickle"))
    orchestrator = Orchestrator(client)
    queue = unique()
    orchestrator.declare_queue(queue)
    with client.kombu_connection() as connection:  # a plain Kombu producer, as a foreign app would send
        Producer(connection.default_channel).publish(
            pickle.dumps(_Exploit(marker)), exchange="", routing_key=queue,
            content_type=PICKLE_CONTENT_TYPE, content_encoding="binary",
        )
    # Expect a JobDecodeError naming the content type, the bytes in the dead-letter queue, no side effect
    with pytest.raises(JobDecodeError, match="content type") as info:
        orchestrator.receive_message(queue)
    assert info.value.dead_letter_queue == f"{queue}.dlq"
    assert orchestrator.count_queue_messages(f"{queue}.dlq") == 1
    assert not marker.exists()
    orchestrator.close()


def test_our_decoder_refuses_pickle_bytes() -> None:
    with pytest.raises(ValueError):
        loads(pickle.dumps({"a": 1}))


@pytest.mark.parametrize("version", [0, 2, 99, "1", None])
def test_unknown_envelope_version_is_refused(version: object) -> None:
    encoded = forge(dumps(training_job()), mindtrace_job=version)
    with pytest.raises(ValueError, match="version"):
        loads(encoded)
    # Through Kombu it surfaces as a DecodeError, which the orchestrator dead-letters
    with pytest.raises(DecodeError, match="version"):
        kombu_serialization.loads(encoded, CONTENT_TYPE, "utf-8", accept=ACCEPT)


@pytest.mark.parametrize(
    "body",
    [
        '{"mindtrace_job": 1}',
        '{"mindtrace_job": 1, "job": []}',
        '{"mindtrace_job": 1, "job": {"name": "x"}}',
        '{"mindtrace_job": 1, "job": {"name": "x", "payload": {"name": "s", "input": 5}}}',
    ],
)
def test_malformed_envelopes_are_refused(body: str) -> None:
    with pytest.raises(ValueError):
        loads(body)


# -- registration --------------------------------------------------------------------------------


def test_entry_point_is_in_the_installed_metadata() -> None:
    (found,) = [ep for ep in entry_points(group="kombu.serializers") if ep.name == SERIALIZER]
    assert found.value == "mindtrace_kombu.serialization:register_args"
    assert found.load() is register_args
    assert register_args[2:] == (CONTENT_TYPE, "utf-8")


_PLAIN_KOMBU = """
import sys
from kombu import serialization
print(serialization.registry.name_to_type.get("mindtrace-job"))
job = serialization.loads(sys.stdin.read(), "application/x-mindtrace-job+json", "utf-8",
                          accept=["application/x-mindtrace-job+json"])
print(type(job).__name__, job.id)
"""


def test_plain_kombu_process_decodes_jobs_through_the_entry_point() -> None:
    # Given a process that imports only Kombu: the entry point registers the serializer
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_KOMBU], input=dumps(training_job()),
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.stdout.split() == [CONTENT_TYPE, "Job", "train-1"]


@pytest.mark.parametrize(
    "first_import",
    ["import kombu.serialization", "import kombu.entity", "from kombu import Connection", "import celery"],
)
def test_kombu_imported_first_loads_the_entry_point_without_an_import_cycle(first_import: str) -> None:
    # Kombu loads the entry point halfway through importing kombu.serialization; the package must
    # not re-enter Kombu's half-initialised modules then (every Celery process would crash)
    code = f"{first_import}\nfrom mindtrace_kombu import Orchestrator, LocalClient\nprint(Orchestrator(LocalClient()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Orchestrator(LocalClient(" in result.stdout
