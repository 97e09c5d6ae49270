"""Side-by-side throughput and latency of mindtrace-kombu and its baselines (``python -m benchmarks``)."""
