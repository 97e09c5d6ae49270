"""The web dashboard (``mindtrace-jobs dashboard``) in a real browser: headless Chromium (Debian's
``chromium``) driven by Playwright, against real Redis and RabbitMQ.

Each test starts a :class:`DashboardServer` on a free port in a thread, on the same orchestrator
the test feeds (on RabbitMQ without the management API that is how the dashboard knows the
test's queues). Screenshots go to the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mindtrace_kombu import Job, JobOutput, Orchestrator
from mindtrace_kombu.dashboard import DashboardServer
from mindtrace_kombu.dashboard.sampling import Point, rates
from mindtrace_kombu.queues import dead_letter_queue_name
from mindtrace_kombu.worker import Worker

from .conftest import free_port, make_job, require_tools, unique, wait_until
from .test_architecture import BEHIND_THE_SEAM, GRAPH

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
BROKERS = pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
TOKEN = "correct horse battery staple"


class DoubledOutput(JobOutput):
    doubled: int


def double(job: Job) -> DoubledOutput:
    return DoubledOutput(doubled=job.payload.input.value * 2)  # type: ignore[attr-defined]


def fail(job: Job) -> None:
    raise ValueError(f"value {job.payload.input.value} is cursed")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_tools("chromium")  # skips (fails under MINDTRACE_REQUIRE_BROKERS=1) without Debian's chromium
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@contextmanager
def serving(orchestrator: Orchestrator, **options: Any) -> Iterator[DashboardServer]:
    """The dashboard of ``orchestrator`` on a free port, served by a thread until the block ends."""
    server = DashboardServer(orchestrator, "127.0.0.1", free_port(), interval=0.5, refresh=1, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.close()


def dead_letter_one(orchestrator: Orchestrator, queue: str) -> Job:
    """Declare ``queue`` and put one failed job in its dead-letter queue."""
    orchestrator.declare_queue(queue)
    job = make_job(7)
    orchestrator.publish(queue, job)
    orchestrator.consume(queue, fail, until_empty=True, max_retries=0)
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue)) == 1
    return job


def row(page: Any, name: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def cell(page: Any, name: str, column: str) -> Any:
    """The cell of queue ``name``'s row under the header ``column``."""
    headers = page.locator("thead th").all_inner_texts()
    return row(page, name).locator("td").nth(headers.index(column))


@BROKERS
def test_the_queues_page_shows_counts_that_follow_publishes(
    orchestrator: Orchestrator, page: Any, tmp_path: Path
) -> None:
    """Given a queue with a dead letter, expect its row to show ready, dead letters and
    consumers, and the ready count to follow publishes on reload and on the page's own refresh."""
    queue = unique("dash")
    dead_letter_one(orchestrator, queue)
    with serving(orchestrator) as server:
        page.goto(f"{server.url}/queues")
        expect(cell(page, queue, "ready")).to_have_text("0")
        expect(cell(page, queue, "dead letters")).to_have_text("1")
        expect(cell(page, queue, "consumers")).to_have_text("0")
        orchestrator.publish(queue, make_job(1))
        page.reload()
        expect(cell(page, queue, "ready")).to_have_text("1")
        orchestrator.publish_many(queue, [make_job(2), make_job(3)])
        expect(cell(page, queue, "ready")).to_have_text("3")  # no reload: the page refreshes itself
        if orchestrator.unacked_counts() is None:  # RabbitMQ without the management API
            expect(cell(page, queue, "in flight")).to_have_text("-")
            expect(cell(page, queue, "publish rate")).to_have_text("-")
        else:
            expect(cell(page, queue, "in flight")).to_have_text("0")
            expect(cell(page, queue, "publish rate")).to_have_text(re.compile(r"^\d+\.\d/s$"))
        expect(row(page, queue).locator("svg.chart polyline.ready")).to_have_count(1)
        page.screenshot(path=tmp_path / "queues.png", full_page=True)
    assert (tmp_path / "queues.png").stat().st_size > 0


def test_only_the_command_imports_the_dashboard_which_stays_in_front_of_the_seam() -> None:
    """Given the import graph, expect no module but the ``dashboard`` command to import the
    dashboard, and the dashboard to import no backend, store or transport."""
    importers = {name for name, targets in GRAPH.items() if any(t.startswith("dashboard") for t in targets)}
    assert {name for name in importers if not name.startswith("dashboard")} == {"cli.commands_dashboard"}
    dashboard = {target for name, targets in GRAPH.items() if name.startswith("dashboard") for target in targets}
    assert {target for target in dashboard if target.startswith(BEHIND_THE_SEAM)} == set()


def test_rates_come_from_the_publish_counter_and_the_backlog() -> None:
    """Given samples 0, 1 and 2 s apart, expect the publish rate from the counter and the ack
    rate as what left the backlog, against the newest point at least ``span`` older."""
    history = (Point(0.0, 0, 0, 100), Point(1.0, 5, 1, 110), Point(2.0, 2, 1, 120))
    assert rates(history, span=2.0) == (10.0, 8.5)  # 20 published, backlog 0 -> 3
    assert rates(history, span=1.0) == (10.0, 13.0)  # 10 published, backlog 6 -> 3
    assert rates(history[:1], span=1.0) == (None, None)
    assert rates((Point(0.0, 0, None, 1), Point(1.0, 0, None, 4)), span=1.0) == (3.0, None)
    assert rates((Point(0.0, 0, 0, 50), Point(1.0, 0, 0, 2)), span=1.0) == (None, None)  # re-created


@pytest.mark.parametrize("backend", ["redis"])
def test_a_job_is_found_by_id_with_status_attempts_and_output(orchestrator: Orchestrator, page: Any) -> None:
    """Given a completed job, expect the search form to show its status, attempts and output,
    and an unknown id to be reported as such."""
    queue = unique("dash")
    orchestrator.declare_queue(queue)
    job = make_job(21)
    orchestrator.publish(queue, job)
    orchestrator.consume(queue, double, until_empty=True)
    with serving(orchestrator) as server:
        page.goto(f"{server.url}/jobs")
        page.get_by_label("Job id").fill(job.id)
        page.get_by_role("button", name="Look up").click()
        expect(page.locator("dd.field-status")).to_have_text("completed")
        expect(page.locator("dd.field-attempts")).to_have_text("1")
        expect(page.locator("dd.field-output")).to_contain_text('"doubled": 42')
        page.get_by_label("Job id").fill("no-such-job")
        page.get_by_role("button", name="Look up").click()
        expect(page.get_by_text("No job no-such-job in the result store.")).to_be_visible()


@pytest.mark.parametrize("backend", ["rabbitmq"])
def test_job_look_up_without_a_result_store_says_so(orchestrator: Orchestrator, page: Any) -> None:
    """Given RabbitMQ without a result store, expect the look-up to explain why it cannot answer."""
    with serving(orchestrator) as server:
        page.goto(f"{server.url}/jobs?id=some-job")
        expect(page.get_by_text("No result store is configured")).to_be_visible()


@BROKERS
def test_a_dead_letter_is_requeued_through_the_confirmation_page(
    orchestrator: Orchestrator, page: Any, tmp_path: Path
) -> None:
    """Given a dead letter, expect its reason listed, nothing moved by the confirmation page,
    and the job back on its queue once confirmed."""
    queue = unique("dash")
    job = dead_letter_one(orchestrator, queue)
    dlq = dead_letter_queue_name(queue)
    with serving(orchestrator) as server:
        page.goto(f"{server.url}/dead-letters")
        page.get_by_role("link", name=queue, exact=True).click()
        expect(row(page, job.id).locator("td.reason")).to_contain_text("ValueError: value 7 is cursed")
        page.get_by_role("link", name="Requeue").click()
        expect(page.get_by_role("heading")).to_have_text(f"Requeue dead letters of {queue}?")
        page.screenshot(path=tmp_path / "confirm.png", full_page=True)
        assert orchestrator.count_queue_messages(dlq) == 1  # the confirmation page changes nothing
        page.get_by_role("button", name="Requeue 1 dead letter(s)").click()
        expect(page.get_by_text("Requeued 1 dead letter(s).")).to_be_visible()
    assert orchestrator.count_queue_messages(queue) == 1
    assert orchestrator.count_queue_messages(dlq) == 0
    requeued = orchestrator.receive_message(queue)
    assert requeued is not None and requeued.id == job.id and requeued.attempts == 0


@pytest.mark.parametrize("backend", ["redis"])
def test_purge_runs_only_as_a_confirmed_post(orchestrator: Orchestrator, page: Any) -> None:
    """Given a dead letter, expect a GET of the action to be refused (405) and the purge to run
    once confirmed."""
    queue = unique("dash")
    dead_letter_one(orchestrator, queue)
    dlq = dead_letter_queue_name(queue)
    with serving(orchestrator) as server:
        response = page.goto(f"{server.url}/dead-letters/purge?queue={queue}")
        assert response.status == 405
        assert page.goto(f"{server.url}/dead-letters?queue=amq.reserved").status == 400  # an invalid name
        assert orchestrator.count_queue_messages(dlq) == 1
        page.goto(f"{server.url}/dead-letters?queue={queue}")
        page.get_by_role("link", name="Purge").click()
        page.get_by_role("button", name="Purge 1 dead letter(s)").click()
        expect(page.get_by_text("Purged 1 dead letter(s).")).to_be_visible()
    assert orchestrator.count_queue_messages(dlq) == 0


@pytest.mark.parametrize("backend", ["redis"])
def test_a_forged_csrf_token_is_refused(orchestrator: Orchestrator, page: Any) -> None:
    """Given the confirmation form with its CSRF field changed, expect 403 and nothing requeued."""
    queue = unique("dash")
    dead_letter_one(orchestrator, queue)
    with serving(orchestrator) as server:
        page.goto(f"{server.url}/dead-letters/confirm?queue={queue}&action=requeue")
        page.locator("input[name=csrf]").evaluate("field => field.value = 'forged'")
        with page.expect_response(lambda response: response.request.method == "POST") as answer:
            page.get_by_role("button", name="Requeue 1 dead letter(s)").click()
        assert answer.value.status == 403
        expect(page.get_by_text("CSRF token does not match")).to_be_visible()
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue)) == 1
    assert orchestrator.count_queue_messages(queue) == 0


@pytest.mark.parametrize("backend", ["redis"])
def test_read_only_mode_hides_and_refuses_actions(orchestrator: Orchestrator, page: Any) -> None:
    """Given a read-only dashboard, expect no action links, and 403 for the confirmation page
    and for a POST that carries a valid CSRF token."""
    queue = unique("dash")
    dead_letter_one(orchestrator, queue)
    with serving(orchestrator, read_only=True) as server:
        page.goto(f"{server.url}/dead-letters?queue={queue}")
        expect(page.locator("td.reason")).to_have_count(1)
        expect(page.get_by_role("link", name="Requeue")).to_have_count(0)
        expect(page.get_by_role("link", name="Purge")).to_have_count(0)
        assert page.goto(f"{server.url}/dead-letters/confirm?queue={queue}&action=purge").status == 403
        csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "mindtrace_dashboard_csrf")
        answer = page.request.post(f"{server.url}/dead-letters/purge", form={"csrf": csrf, "queue": queue})
        assert answer.status == 403 and "read-only" in answer.text()
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue)) == 1


@pytest.mark.parametrize("backend", ["redis"])
def test_with_a_token_every_request_needs_it(orchestrator: Orchestrator, page: Any) -> None:
    """Given a token, expect 401 without any data, bearer tokens accepted, and the login form to
    set an HttpOnly session cookie."""
    queue = unique("dash")
    orchestrator.declare_queue(queue)
    with serving(orchestrator, token=TOKEN) as server:
        for path in ("/queues", f"/dead-letters?queue={queue}", "/jobs?id=x", "/workers"):
            response = page.goto(server.url + path)
            assert response.status == 401
            assert queue not in page.content() and "redis://" not in page.content()
        assert page.request.get(f"{server.url}/queues", headers={"Authorization": "Bearer wrong"}).status == 401
        with_bearer = page.request.get(f"{server.url}/queues", headers={"Authorization": f"Bearer {TOKEN}"})
        assert with_bearer.status == 200 and queue in with_bearer.text()
        page.goto(f"{server.url}/login")
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("That token is not valid.")).to_be_visible()
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(row(page, queue)).to_have_count(1)
        session = next(c for c in page.context.cookies() if c["name"] == "mindtrace_dashboard_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict" and TOKEN not in session["value"]


@BROKERS
def test_the_workers_page_lists_running_workers(orchestrator: Orchestrator, page: Any, backend: str) -> None:
    """Given a running worker, expect it listed with its pid and queue (Redis); RabbitMQ keeps
    no registry, which the page says."""
    queue = unique("dash")
    orchestrator.declare_queue(queue)
    worker = Worker(orchestrator, queue, double)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with serving(orchestrator) as server:
            page.goto(f"{server.url}/workers")
            if backend == "rabbitmq":
                expect(page.get_by_text("Worker details are not available on RabbitMQ")).to_be_visible()
                page.goto(f"{server.url}/queues")
                expect(cell(page, queue, "consumers")).to_have_text("1")
            else:
                listed = page.get_by_role("row").filter(has_text=queue)
                expect(listed).to_contain_text(str(os.getpid()))
    finally:
        worker.stop()
        thread.join(timeout=30)


def test_the_command_serves_the_dashboard_and_requires_its_token(tmp_path: Path) -> None:
    """Given ``mindtrace-jobs dashboard`` with a token in the environment, expect 401 without it,
    200 with it, and SIGTERM to stop the server."""
    port = free_port()
    env = {**os.environ, "MINDTRACE_DASHBOARD_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "mindtrace_kombu.cli", "--broker", "memory://", "dashboard", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def status(headers: dict[str, str]) -> Callable[[], int | None]:
        def fetch() -> int | None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/queues", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return None  # not listening yet
        return fetch

    try:
        assert wait_until(status({}), what="the dashboard answering") == 401
        assert status({"Authorization": f"Bearer {TOKEN}"})() == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port} (token required)" in stderr
