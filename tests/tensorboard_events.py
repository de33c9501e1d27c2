"""TensorBoard's own reader of a run's events, for the tests of runs on object storage."""

from __future__ import annotations


def tensorboard_events(run_dir: str, endpoint: str, monkeypatch):
    """TensorBoard's own reader of ``RUN/tensorboard`` (boto3 for ``s3://``, at the endpoint
    named by ``S3_ENDPOINT``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("S3_ENDPOINT", f"http://{endpoint}")
    events = EventAccumulator(run_dir.split("?")[0] + "/tensorboard", size_guidance={"images": 0})
    events.Reload()
    return events
