"""Result names, shared by the scenarios that produce the rows and the ratios that compare them.

They live apart from :mod:`benchmarks.project` so the ratio table can be built when
``mindtrace_kombu`` is not importable.
"""

# Baselines (benchmarks.baselines).
LPUSH = "redis-py LPUSH"
RPOP = "redis-py RPOP"
LPUSH_PIPELINED = "redis-py LPUSH pipelined"
AMQP_PUBLISH = "py-amqp publish"
AMQP_PUBLISH_CONFIRMED = "py-amqp publish+confirm"
AMQP_GET = "py-amqp basic_get"
AMQP_CONSUME = "py-amqp consume+ack"
KOMBU_PUBLISH = "kombu publish"
KOMBU_GET = "kombu get+ack"
KOMBU_CONSUME = "kombu consume+ack"
CELERY_SEND_TASK = "celery send_task"
RQ_ENQUEUE = "rq enqueue"

# End to end, each job system's own worker processes (benchmarks.e2e; Celery's mindtrace-redis
# transport: benchmarks.celery_e2e). The Celery prefork rows run Kombu's stock transports.
MINDTRACE_E2E = "mindtrace-jobs worker e2e"
MINDTRACE_E2E_TUNED = "mindtrace-jobs worker e2e, tuned"
MINDTRACE_E2E_UNCONFIRMED = "mindtrace-jobs worker e2e, unconfirmed publish"
CELERY_E2E_STOCK = "celery prefork e2e, stock redis"
CELERY_E2E_AMQP = "celery prefork e2e, stock amqp"
CELERY_E2E_OURS = "celery prefork e2e, mindtrace-redis"
CELERY_THREADS_E2E = "celery threads e2e"
RQ_E2E = "rq worker e2e"
DRAMATIQ_E2E = "dramatiq worker e2e"

# The project (benchmarks.project).
PUBLISH = "project publish"
PUBLISH_MANY = "project publish_many"
RECEIVE = "project receive_message"
PRIORITY_SMALL = "project priority pub+recv, small backlog"
PRIORITY_BIG = "project priority pub+recv, large backlog"
WORKER_CONSUME = "project worker consume+ack"
WORKER_CONSUME_NO_RESULTS = "project worker consume+ack, no result store"
PICKUP_LATENCY = "project pickup latency"

# RabbitMQ publishing modes (benchmarks.publish_modes).
PUBLISH_UNCONFIRMED = "project publish, unconfirmed"
PUBLISH_ONE_THREAD = "project publish confirmed, 1 thread"
PUBLISH_THREADS = "project publish confirmed, 8 threads"

# The asyncio API (benchmarks.async_publish).
ASYNC_PUBLISH = "async publish, 100 tasks"
SYNC_PUBLISH_SEQUENTIAL = "sync publish, sequential"
LOOP_STALL = "async publish+consume, loop stall"

# CPU-bound handlers, processes vs threads (benchmarks.cpu_pool).
CPU_THREADS = "project cpu-bound worker, 4 threads"
CPU_PROCESSES = "project cpu-bound worker, 4 processes"

# -- job results (benchmarks/results.py) ----------------------------------------------------------
PUBLISH_TRACKED = "publish, results tracked"
PUBLISH_UNTRACKED = "publish, no result store"
GET_JOB_1K = "get_job, 1k records (SQLite)"
GET_JOB_100K = "get_job, 100k records (SQLite)"
