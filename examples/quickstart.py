"""The README quick start: a typed job through an in-process queue. No server needed.

Run: python examples/quickstart.py
"""

from mindtrace.jobs import Job, JobInput, JobSchema, JobType, LocalClient, Orchestrator


class SimpleJobInput(JobInput):
    data: str = "test_data"
    param1: str = "value1"


input_data = SimpleJobInput()
schema = JobSchema(name="example_schema", input=input_data)

job = Job(
    id="job_123",
    name="example_job",
    job_type=JobType.DATA_PROCESSING,
    payload=schema,
    created_at="2024-01-01T00:00:00",
)

orchestrator = Orchestrator(LocalClient())
orchestrator.declare_queue("my_queue")
orchestrator.publish("my_queue", job)

received_job = orchestrator.receive_message("my_queue")
print(f"Received {received_job.id} ({received_job.name}): {received_job.payload.input!r}")
print(f"Left in my_queue: {orchestrator.count_queue_messages('my_queue')}")
print(f"Nothing more: {orchestrator.receive_message('my_queue')}")
