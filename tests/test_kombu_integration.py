"""Kombu's own Redis integration tests, run against Kombu's Redis transport and against ours.

At test time the Kombu sdist matching the installed version is downloaded from PyPI into a cache
directory (``$XDG_CACHE_HOME/mindtrace-kombu``, never into this repository), and
``t/integration/test_redis.py`` and ``t/integration/test_redis_brpop_qos.py`` are run twice with
pytest in subprocesses, concurrently: once on Kombu's stock transport (the baseline), once with
the ``redis``, ``rediss`` and ``sentinel`` aliases pointing at this package's transports. Every
test that passes on stock must pass on ours, except :data:`EXCLUDED`; as Kombu marks these tests
flaky (five reruns), a test that fails on ours only is run again, up to :data:`RERUNS` times.

Kombu's tests use fixed queue names on database 0, delete keys there and expect a fresh
database. A generated pytest plugin moves every redis-py connection pool of the subprocesses to
database ``MINDTRACE_KOMBU_IT_DB`` (default 13), so the shared database 0 is never touched, and
puts every Kombu connection under a ``global_keyprefix`` of its run (before the one a test asks
for), so runs see nothing of earlier or concurrent runs; their keys are deleted afterwards by
that prefix. Nothing is flushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import kombu
import pytest
import redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
REQUIRE = os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1"
#: The database the subprocesses use instead of the 0 that Kombu's tests ask for.
DB = int(os.environ.get("MINDTRACE_KOMBU_IT_DB", "13"))

#: The files of the sdist the two test modules need (``t/__init__.py`` and
#: ``t/integration/__init__.py`` put the sdist root on ``sys.path``).
SDIST_FILES = ("t/__init__.py", "t/integration/__init__.py", "t/integration/common.py",
               "t/integration/test_redis.py", "t/integration/test_redis_brpop_qos.py")
SUITE_DIR = "t/integration"
SUITES = (f"{SUITE_DIR}/test_redis.py", f"{SUITE_DIR}/test_redis_brpop_qos.py")
#: Runs of the tests that failed on ours only, before they count as failures.
RERUNS = 2

_PRIORITY = "exact priorities, higher first: stock Kombu serves lower numbers first"
_KEYS = "reads stock's key layout (a list per queue at <global_keyprefix><queue>); ours: redis_store.keys"
_BINDINGS = ("reads stock's binding keys or scripts (_kombu.binding.*, _kombu.binding_deadlines, its sweep); "
             "ours: a sorted set per exchange at namespace.binding(exchange), member deadlines")
_UNACKED = "reads stock's unacked hash and visibility-timeout sweep; ours holds deliveries under leases"

#: Tests that pass on stock and are not expected to pass on ours (every parametrization), and why.
EXCLUDED: dict[str, str] = {
    "test_redis.py::test_RedisPriority::test_publish_consume": _PRIORITY,
    "test_redis.py::test_RedisPriority::test_publish_requeue_consume": _PRIORITY,
    "test_redis.py::test_RedisPriority::test_simple_queue_publish_consume": _PRIORITY,
    "test_redis.py::test_RedisPriority::test_simple_buffer_publish_consume": _PRIORITY,
    "test_redis.py::test_RedisPublishBatch::test_direct_priority_and_fifo": _PRIORITY,
    "test_redis.py::test_RedisPublishBatch::test_fanout_is_deferred_until_flush": (
        "subscribes to global_keyprefix + _get_publish_topic() (here every run has a global_keyprefix); "
        "our topic already holds the prefix (namespace.fanout), so it listens on a doubly prefixed channel"),
    "test_redis.py::test_RedisQueueExpiration::test_queue_expiration_set": _KEYS,
    "test_redis.py::test_RedisQueueExpiration::test_expiration_gets_reset_on_put": _KEYS,
    "test_redis.py::test_RedisQueueExpiration::test_expiration_gets_reset_on_get": _KEYS,
    "test_redis.py::test_RedisQueueExpiration::test_queue_expires_for_all_priorities": _KEYS,
    "test_redis.py::test_RedisQueueExpiration::test_binding_table_swept_after_consumer_stops": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_binding_table_kept_while_consumer_is_paused": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_binding_table_kept_while_drain_events_has_prefetch_full": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_binding_table_shared_with_queue_without_expires_never_swept": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_deleting_an_expiring_queue_removes_its_binding": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_refresh_keeps_a_topic_binding_as_bound": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_refresh_and_sweep_binding_scripts": _BINDINGS,
    "test_redis.py::test_RedisQueueExpiration::test_sweep_script_honors_its_limit": (
        "calls stock's sweep script through the channel's client, which on stock prefixes its first key "
        "with global_keyprefix (here every run has one); ours adds no prefix (the namespace holds it)"),
    "test_redis.py::test_RedisRestoreVisible::test_restore_visible_requeues_expired_unacked": _UNACKED,
    "test_redis.py::test_RedisRestoreBindingLookupFailure::test_failed_requeue_keeps_message_unacked": (
        _UNACKED + "; injects a failure into the SMEMBERS of stock's restore transaction, which ours has not"),
    "test_redis.py::test_RedisRestoreBindingLookupFailure::test_failed_restore_visible_keeps_message_unacked": _UNACKED,
    "test_redis.py::test_RedisRestoreAtShutdown::test_unacked_message_requeued_on_connection_close": _UNACKED,
}

#: Not run on ours (excluded anyway): it writes ``_kombu.binding.<name>`` through the channel's
#: client, which on ours adds no ``global_keyprefix``, so the key would land outside the run's.
NOT_RUN_ON_OURS = "test_redis.py::test_RedisQueueExpiration::test_refresh_and_sweep_binding_scripts"

#: Loaded by each subprocess (``-p``): one database for every redis-py pool, and for ours the
#: transport aliases.
PLUGIN = '''
import os

import kombu.connection
import redis.connection
from kombu.transport import TRANSPORT_ALIASES

_DB, _PREFIX = int(os.environ["MINDTRACE_IT_DB"]), os.environ["MINDTRACE_IT_PREFIX"]
_pool_init, _connection_init = redis.connection.ConnectionPool.__init__, kombu.connection.Connection.__init__


def pool_init(self, *args, **kwargs):
    kwargs["db"] = _DB  # Kombu's tests use database 0, shared by everyone
    _pool_init(self, *args, **kwargs)


def connection_init(self, *args, **kwargs):
    _connection_init(self, *args, **kwargs)  # then every key of the run under its own prefix
    options = dict(self.transport_options or {})
    if not str(options.get("global_keyprefix") or "").startswith(_PREFIX):
        options["global_keyprefix"] = _PREFIX + (options.get("global_keyprefix") or "")
    self.transport_options = options


redis.connection.ConnectionPool.__init__ = pool_init
kombu.connection.Connection.__init__ = connection_init
if os.environ["MINDTRACE_IT_TRANSPORT"] == "ours":
    TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "mindtrace_kombu.transport.redis:Transport"
    TRANSPORT_ALIASES["sentinel"] = "mindtrace_kombu.transport.sentinel:Transport"
'''

INI = """
[pytest]
python_classes = test_*
filterwarnings = ignore::pytest.PytestUnknownMarkWarning
"""


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mindtrace-kombu"


def kombu_tests() -> Path:
    """The sdist's test files for the installed Kombu, downloaded and extracted once."""
    root = _cache_dir() / f"kombu-{kombu.__version__}-integration"
    if all((root / name).is_file() for name in SDIST_FILES):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"kombu=={kombu.__version__}", "--no-binary", ":all:",
             "--no-deps", "--disable-pip-version-check", "-q", "-d", scratch],
            capture_output=True, text=True, timeout=300,
        )
        sdists = list(Path(scratch).glob("kombu-*.tar.gz"))
        if fetched.returncode or not sdists:
            message = f"cannot download the kombu {kombu.__version__} sdist: {fetched.stderr.strip()[-500:]}"
            pytest.fail(message) if REQUIRE else pytest.skip(message)
        staged = Path(scratch) / "tests"
        with tarfile.open(sdists[0]) as archive:
            prefix = f"kombu-{kombu.__version__}/"
            for name in SDIST_FILES:
                source = archive.extractfile(prefix + name)
                assert source is not None, name
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                (staged / name).write_bytes(source.read())
        try:
            staged.rename(root)
        except OSError:
            if not root.is_dir():  # another run extracted it meanwhile: use that one
                raise
    return root


@pytest.fixture
def prefixes() -> Iterator[dict[str, str]]:
    """A ``global_keyprefix`` per run (stock, ours); their keys are deleted afterwards."""
    url = urlparse(REDIS_URL)
    client = redis.Redis(host=url.hostname or "localhost", port=url.port or 6379, db=DB, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis unreachable: {exc}") if REQUIRE else pytest.skip(f"Redis unreachable: {exc}")
    run = uuid.uuid4().hex[:12]
    names = {transport: f"mindtrace-kombu-it-{run}-{transport}:" for transport in ("stock", "ours")}
    try:
        yield names
    finally:
        for name in names.values():
            keys = list(client.scan_iter(match=f"{name}*", count=1000))
            for first in range(0, len(keys), 500):
                client.delete(*keys[first:first + 500])


def _start(root: Path, work: Path, transport: str, prefix: str, tests: list[str], report: str) -> subprocess.Popen[str]:
    """Run ``tests`` on ``transport`` under ``prefix``; the JUnit report goes to ``work/report``."""
    url = urlparse(REDIS_URL)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(work), str(root), os.environ.get("PYTHONPATH")])),
        "REDIS_HOST": url.hostname or "localhost",
        "REDIS_6379_TCP": str(url.port or 6379),
        "MINDTRACE_IT_DB": str(DB),
        "MINDTRACE_IT_PREFIX": prefix,
        "MINDTRACE_IT_TRANSPORT": transport,
    }
    command = [sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini"), f"--rootdir={root}",
               "-p", "mindtrace_it_plugin", "-p", "no:cacheprovider", "-q", "--timeout=120",
               f"--junitxml={work / report}", *tests]
    if transport == "ours":
        command += ["--deselect", f"{SUITE_DIR}/{NOT_RUN_ON_OURS}[None]", "--deselect", f"{SUITE_DIR}/{NOT_RUN_ON_OURS}[connection1]"]
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def outcomes(report: Path) -> dict[str, bool]:
    """Test id (``test_redis.py::Class::name[param]``, under ``t/integration``) -> passed, from
    a JUnit XML report."""
    found: dict[str, bool] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module, *classes = case.get("classname", "").removeprefix("t.integration.").split(".")
        test_id = "::".join([f"{module}.py", *classes, case.get("name", "")])
        found[test_id] = not any(child.tag in ("failure", "error", "skipped") for child in case)
    return found


def excluded(test_id: str) -> bool:
    return any(test_id == name or test_id.startswith(f"{name}[") for name in EXCLUDED)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kombu_redis_integration_suite_passes_on_our_transport(prefixes: dict[str, str], tmp_path: Path) -> None:
    """Given Kombu's Redis integration tests, when run on stock Kombu and on this package's
    transport, expect every test that passes on stock to pass on ours, except :data:`EXCLUDED`."""
    root = kombu_tests()
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "mindtrace_it_plugin.py").write_text(PLUGIN)
    runs = {name: _start(root, tmp_path, name, prefix, list(SUITES), f"{name}.xml") for name, prefix in prefixes.items()}
    logs = {name: run.communicate(timeout=1100)[0] for name, run in runs.items()}
    stock, ours = outcomes(tmp_path / "stock.xml"), outcomes(tmp_path / "ours.xml")
    baseline = {test_id for test_id, passed in stock.items() if passed}
    assert len(baseline) > 100, f"the stock run collected too little:\n{logs['stock'][-3000:]}"
    unknown = [name for name in EXCLUDED if not any(t == name or t.startswith(f"{name}[") for t in stock)]
    assert unknown == [], "exclusions that match no test of this Kombu version"
    for attempt in range(RERUNS):  # Kombu marks its Redis tests flaky (reruns=5, pytest-rerunfailures)
        regressions = sorted(t for t in baseline if not excluded(t) and not ours.get(t))
        if not regressions:
            break
        tests = [f"{SUITE_DIR}/{test_id}" for test_id in regressions]
        rerun = _start(root, tmp_path, "ours", prefixes["ours"], tests, f"rerun{attempt}.xml")
        logs["ours"] = rerun.communicate(timeout=1100)[0]
        ours.update(outcomes(tmp_path / f"rerun{attempt}.xml"))
    regressions = sorted(t for t in baseline if not excluded(t) and not ours.get(t))
    print(f"\nKombu {kombu.__version__} integration tests: stock {len(baseline)}/{len(stock)} passed, "
          f"ours {sum(ours.values())}/{len(ours)} passed, {sum(map(excluded, baseline))} excluded"
          f"; failed on stock: {sorted(set(stock) - baseline)}"
          f"; excluded but passed on ours: {sorted(t for t in baseline if excluded(t) and ours.get(t))}")
    assert regressions == [], f"pass on stock, fail on ours:\n{logs['ours'][-6000:]}"
