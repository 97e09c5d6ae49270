"""The README's complete example: declare, publish, count, receive, clean and delete on Redis.

Needs a Redis server: REDIS_URL (default redis://localhost:6379/0). The queue name gets the suffix
in MINDTRACE_EXAMPLE_SUFFIX (default none) so parallel runs on one server do not collide.

Run: python examples/complete_example.py
"""

import os
import time  # noqa: F401 - imported by the README's version; nothing here needs to wait

from mindtrace.jobs import Job, JobInput, JobSchema, JobType, Orchestrator, RedisClient


class DataProcessingInput(JobInput):
    dataset_path: str
    processing_type: str
    timeout: int = 300


job_input = DataProcessingInput(
    dataset_path="/data/my_dataset.csv",
    processing_type="classification",
)

schema = JobSchema(name="data_processing_schema", input=job_input)

job = Job(
    id="dp_001",
    name="data_processing_job",
    job_type=JobType.DATA_PROCESSING,
    payload=schema,
    created_at="2024-01-01T00:00:00",
)

client = RedisClient(url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
orchestrator = Orchestrator(client)

queue_name = "data_processing_queue" + os.environ.get("MINDTRACE_EXAMPLE_SUFFIX", "")
orchestrator.declare_queue(queue_name)

job_id = orchestrator.publish(queue_name, job)
print(f"Published job: {job_id}")

count = orchestrator.count_queue_messages(queue_name)
print(f"Jobs in queue: {count}")

received_job = orchestrator.receive_message(queue_name)
if received_job:
    print(f"Processing job: {received_job.name}")
    print(f"Input: {received_job.payload.input!r}")

orchestrator.clean_queue(queue_name)
orchestrator.delete_queue(queue_name)
