"""Fixtures for the submission listener: a TLS certificate from a test CA, and listeners
started in the test's event loop with the session's settings (or variations of them)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from app.core.config import Settings
from app.submission.server import SubmissionServer
from tests.submission.clients import Listener

StartSubmission = Callable[..., Awaitable[Listener]]


@pytest.fixture(scope="session")
def submission_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """The CA that signs the listener's certificate, and its PEM file for clients."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("submission-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="session")
def submission_tls(submission_ca: tuple[trustme.CA, Path]) -> ssl.SSLContext:
    """The listener's server context: a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    submission_ca[0].issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest_asyncio.fixture
async def start_submission(
    settings: Settings, submission_tls: ssl.SSLContext, submission_ca: tuple[trustme.CA, Path]
) -> AsyncIterator[StartSubmission]:
    """Start listeners (settings overridden by keyword); all are closed after the test."""
    started: list[SubmissionServer] = []

    async def start(**overrides: Any) -> Listener:
        chosen = settings.model_copy(update=overrides) if overrides else settings
        server = SubmissionServer(chosen, submission_tls)
        started.append(server)
        await server.start("127.0.0.1", port=0, tls_port=0)
        return Listener(
            server=server,
            port=server.ports["starttls"],
            tls_port=server.ports["tls"],
            ca_file=submission_ca[1],
        )

    yield start
    for server in started:
        await server.close(grace=0)  # open sessions get their 421 at once


@pytest_asyncio.fixture
async def submission(start_submission: StartSubmission) -> Listener:
    """A listener with the session's settings."""
    return await start_submission()
