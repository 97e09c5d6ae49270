"""Helpers shared by the tests and the servers they start (no fixtures: see ``conftest.py``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.02)
    return value


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` without persistence on a loopback port (``port``, else a free one), in
    a directory of its own with its log; with ``config``, a sentinel reading that configuration.
    Started at once; :meth:`start` starts it again (a cluster node rejoins from its directory)."""

    def __init__(
        self, directory: Path, *arguments: str, port: int | None = None, config: str | None = None,
        decode_responses: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        command = [str(shutil.which("redis-server"))]
        if config is not None:
            config_file = directory / "sentinel.conf"
            config_file.write_text(config)
            command += [str(config_file), "--sentinel"]
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
                    "--logfile", str(directory / "log.txt"), *arguments]
        self.command = command if config is not None else [*command, "--save", "", "--appendonly", "no"]
        self.client = redis.Redis(port=self.port, socket_timeout=5, decode_responses=decode_responses)
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(self.answers, 15, f"the server on port {self.port} answering")

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGKILL, as a crash."""
        self.process.kill()
        self.process.wait()
        self.client.close()
