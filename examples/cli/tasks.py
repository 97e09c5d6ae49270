"""A handler for ``mindtrace-jobs worker examples.cli.tasks:resize`` (run from the repository root)."""


def resize(job):
    if job.payload.input.width > 4000:
        raise ValueError(f"width {job.payload.input.width} is too large")
