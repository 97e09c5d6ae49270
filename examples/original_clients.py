"""Code written for the original Mindtrace jobs clients, unchanged: the queue API on the client.

In-process (no server). The same calls work on RedisClient and RabbitMQClient; exchanges
(declare_exchange, declare_queue(exchange=...), publish(exchange=...)) need RabbitMQ.

Run: python examples/original_clients.py
"""

from mindtrace.jobs import Job, JobInput, JobSchema, LocalClient, Orchestrator


class ResizeInput(JobInput):
    width: int


def make_job(name: str, width: int) -> Job:
    return Job(id=f"{name}_123", name=name, payload=JobSchema(name=f"{name}_schema", input=ResizeInput(width=width)))


client = LocalClient(broker_id="original-clients-example")
print(client.declare_queue("images", queue_type="priority"))  # {'status': 'success', ...}
client.publish("images", make_job("thumbnail", 128), priority=1)
client.publish("images", make_job("poster", 4000), priority=9)
print("count:", client.count_queue_messages("images"))
job = client.receive_message("images")
print("first:", job.name, job.payload.input.width)

orchestrator = Orchestrator(client)  # an Orchestrator on the same client sees the same queue
print("orchestrator sees:", orchestrator.count_queue_messages("images"))

print(client.clean_queue("images")["status"])
try:
    client.declare_exchange(exchange="events")
except NotImplementedError as exc:  # as in the original: exchanges are a RabbitMQ feature
    print("exchanges:", exc)
print(client.delete_queue("images")["message"])
client.connection.close()
