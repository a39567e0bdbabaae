"""Fixtures of the submission listener and of webhooks, for sends with a group."""

from tests.submission.conftest import (
    start_submission,
    submission,
    submission_ca,
    submission_tls,
)
from tests.webhooks.conftest import dispatcher, receiver

__all__ = [
    "dispatcher",
    "receiver",
    "start_submission",
    "submission",
    "submission_ca",
    "submission_tls",
]
