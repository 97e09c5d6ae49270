"""The Kombu serializer for jobs.

Registered with Kombu under :data:`SERIALIZER` / :data:`CONTENT_TYPE` when this module is imported
(and through the ``kombu.serializers`` entry point, so plain Kombu and Celery processes that have
the package installed can decode jobs too). A job travels as JSON::

    {"mindtrace_job": 1, "input_type": "pkg.mod.MyInput", "output_type": null, "job": {...}}

``input_type``/``output_type`` are looked up in :data:`~mindtrace_kombu.models.PAYLOAD_TYPES`
only; a name that is not registered yields the generic base class with every field kept as an
extra field. Nothing a message names is ever imported; a name that designates anything else
this process has loaded (``os.system``, a JobOutput where a JobInput belongs) is forged, and the
message does not decode. Other pydantic models inside a structure
(a Celery task body, a task result) travel as ``{"mindtrace_model": name, "data": {...}}``.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from typing import Any

from pydantic import BaseModel

from .models import PAYLOAD_TYPES, Job, JobInput, JobOutput, payload_type_name

__all__ = ["ACCEPT", "CONTENT_TYPE", "FORMAT_VERSION", "JOB_PREFIX", "SERIALIZER", "dumps", "loads", "register_args"]

SERIALIZER = "mindtrace-job"
CONTENT_TYPE = "application/x-mindtrace-job+json"
#: The ``accept=`` list every consumer of this package passes to Kombu: jobs only.
ACCEPT = [CONTENT_TYPE]
FORMAT_VERSION = 1

_JOB_KEY = "mindtrace_job"
_MODEL_KEY = "mindtrace_model"
#: How :func:`dumps` of a :class:`Job` begins (a body that is the job itself).
JOB_PREFIX = f'{{"{_JOB_KEY}":'.encode()


def _type_name(model: BaseModel | None) -> str | None:
    return None if model is None else payload_type_name(type(model))


def _job_envelope(job: Job) -> dict[str, Any]:
    return {
        _JOB_KEY: FORMAT_VERSION,
        "input_type": _type_name(job.payload.input),
        "output_type": _type_name(job.payload.output),
        "job": job.model_dump(mode="json"),
    }


def _encode_default(obj: object) -> object:
    if isinstance(obj, Job):
        return _job_envelope(obj)
    if isinstance(obj, BaseModel):
        return {_MODEL_KEY: payload_type_name(type(obj)), "data": obj.model_dump(mode="json")}
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


@functools.lru_cache(maxsize=None)
def _json_type_name(cls: type[BaseModel] | None) -> str:
    return json.dumps(None if cls is None else payload_type_name(cls))


def dumps(obj: object) -> str:
    """Encode a :class:`Job` (or a JSON structure holding jobs and pydantic models)."""
    if isinstance(obj, Job):  # the hot path: one pydantic dump in Rust, no re-parse
        output = obj.payload.output
        return (
            f'{{"{_JOB_KEY}":{FORMAT_VERSION},'
            f'"input_type":{_json_type_name(type(obj.payload.input))},'
            f'"output_type":{_json_type_name(None if output is None else type(output))},'
            f'"job":{obj.model_dump_json()}}}'
        )
    return json.dumps(obj, default=_encode_default, separators=(",", ":"))


def _names_loaded_object(name: str) -> bool:
    """Whether ``name`` designates an object of a module this process has loaded (looked up
    statically: nothing is imported or run)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:cut]))
        if obj is not None:
            for attribute in parts[cut:]:
                obj = inspect.getattr_static(obj, attribute, None)
                if obj is None:
                    return False
            return True
    return False


def _payload(data: Any, type_name: Any, base: type[BaseModel]) -> BaseModel | None:
    if data is None:
        return None
    cls = PAYLOAD_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        if isinstance(type_name, str) and _names_loaded_object(type_name):
            raise ValueError(f"forged type name {type_name!r}: it names an object that is not a {base.__name__}")
        cls = base  # a type this process does not know: keep every field as an extra field
    elif not issubclass(cls, base):
        raise ValueError(f"forged type name {type_name!r}: it names a payload type that is not a {base.__name__}")
    return cls.model_validate(data)


def _decode_job(envelope: dict[str, Any]) -> Job:
    version = envelope.get(_JOB_KEY)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown job format version {version!r} (this build reads {FORMAT_VERSION})")
    data = envelope.get("job")
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        raise ValueError("job envelope has no job object with a payload")
    payload = dict(data["payload"])
    payload["input"] = _payload(payload.get("input"), envelope.get("input_type"), JobInput)
    payload["output"] = _payload(payload.get("output"), envelope.get("output_type"), JobOutput)
    return Job.model_validate({**data, "payload": payload})


def _revive(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _JOB_KEY in obj:
            return _decode_job(obj)
        if _MODEL_KEY in obj and "data" in obj:
            cls = PAYLOAD_TYPES.get(obj[_MODEL_KEY])
            return obj["data"] if cls is None else cls.model_validate(obj["data"])
        return {key: _revive(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_revive(item) for item in obj]
    return obj


def loads(data: str | bytes) -> Any:
    """Decode what :func:`dumps` produced; raises ``ValueError`` for anything else."""
    obj = json.loads(data)
    if isinstance(obj, dict) and _JOB_KEY in obj:
        return _decode_job(obj)
    return _revive(obj)


#: ``(encoder, decoder, content_type, content_encoding)`` for the ``kombu.serializers`` entry point.
register_args = (dumps, loads, CONTENT_TYPE, "utf-8")

# Imported last: importing kombu.serialization loads the ``kombu.serializers`` entry points, which
# name this module's ``register_args``; it must exist before that import runs.
from kombu.serialization import register  # noqa: E402

register(SERIALIZER, *register_args)
