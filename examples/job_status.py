"""Job status and results: publish, let a worker run the jobs, then look them up by id.
In-process backend and store: no server needed (Redis gives the same calls across processes).

Run: python examples/job_status.py
"""

import threading

from mindtrace.jobs import Job, JobInput, JobOutput, JobSchema, LocalClient, Orchestrator


class Numbers(JobInput):
    values: list[int]


class Total(JobOutput):
    total: int


def add(job: Job) -> Total:
    values = job.payload.input.values
    if not values:
        raise ValueError("nothing to add")
    return Total(total=sum(values))


def job(values: list[int]) -> Job:
    return Job(name="add", payload=JobSchema(name="add", input=Numbers(values=values)), max_retries=0)


orchestrator = Orchestrator(LocalClient())
orchestrator.declare_queue("sums")
ok, empty, skipped = job([1, 2, 3]), job([]), job([4])
orchestrator.publish_many("sums", [ok, empty, skipped])
print(f"cancelled before any worker: {orchestrator.cancel(skipped.id)}")
print(f"before the worker: {orchestrator.get_job(ok.id).status.value}")

worker = threading.Thread(target=orchestrator.consume, args=("sums", add), kwargs={"until_empty": True})
worker.start()
done = orchestrator.wait_for(ok.id, timeout=10)  # woken when the job is final, no polling
worker.join()
print(f"ok: {done.status.value}, output {done.payload.output!r}, attempts {done.attempts}")
failed = orchestrator.get_job(empty.id)
print(f"empty: {failed.status.value}, error {failed.error!r}, dead-lettered {failed.dead_lettered}")
print(f"skipped: {orchestrator.get_job(skipped.id).status.value}")
print(f"failed jobs: {[found.id == empty.id for found in orchestrator.list_jobs('sums', status='failed')]}")
orchestrator.delete_queue("sums")
