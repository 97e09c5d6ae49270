"""The Lua scripts in ``lua/``, each prefixed with ``lua/lib.lua`` and called by SHA.

A script is sent with EVALSHA (one round trip); on ``NOSCRIPT`` (a Redis restart, a failover,
a new server) it is loaded once and called again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

from redis.exceptions import NoScriptError

__all__ = ["Script", "load"]


@dataclass(frozen=True)
class Script:
    """One Lua script, with its SHA-1 (how Redis names scripts)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run on ``client`` (a redis-py client or pipeline): one round trip."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue_on(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add a call to a pipeline, as a plain ``EVALSHA`` command: a Redis Cluster pipeline
        refuses ``evalsha()`` but routes the command by its keys. The caller loads the script
        when the pipeline answers ``NoScriptError``."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load(name: str, *, with_lib: bool = True) -> Script:
    """The script ``lua/<name>.lua``, with ``lua/lib.lua`` in front unless ``with_lib`` is False."""
    source = _read(name)
    return Script(name, f"{_read('lib')}\n{source}" if with_lib else source)
