"""The submission listener's fixtures, for sends with a group over SMTP."""

from tests.submission.conftest import (
    start_submission,
    submission,
    submission_ca,
    submission_tls,
)

__all__ = ["start_submission", "submission", "submission_ca", "submission_tls"]
