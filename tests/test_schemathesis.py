"""schemathesis against openapi/openapi.json: whatever it sends to the send endpoints, the
answer is never a 5xx (and every error is in SendGrid's shape)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from tests.support import Sender, api_in_thread

SCHEMA = schemathesis.openapi.from_path(
    str(Path(__file__).resolve().parent.parent / "openapi" / "openapi.json")
)
SEND_ENDPOINTS = [("/v1/send", "POST"), ("/v3/mail/send", "POST")]


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    """The API on its own thread: schemathesis calls it synchronously."""
    with api_in_thread(settings) as url:
        yield url


def reach_past_the_sender_check(body: dict[str, Any], sender: Sender) -> None:
    """Send from the account's own domain (and, natively, to someone), so that generated
    bodies also reach templates, batches, suppressions and the database."""
    body["from"] = {"email": sender.address()}
    if "personalizations" in body:
        return
    if bool(body.get("to")) == bool(body.get("recipients")):
        body["to"], body["recipients"] = ["someone@example.test"], []
    if not (body.get("text") or body.get("html") or body.get("template_id")):
        body["text"] = "Hello."


def check(response: Any) -> None:
    """No server error; errors in SendGrid's shape."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        errors = response.json()["errors"]
        assert errors
        assert all(set(e) == {"message", "field", "help"} for e in errors)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("path", "method"), SEND_ENDPOINTS)
def test_send_endpoints_never_answer_5xx(
    path: str, method: str, live_url: str, sender: Sender
) -> None:
    operation = SCHEMA[path][method]
    examples = operation.get_strategies_from_examples()
    cases = st.one_of(operation.as_strategy(), *examples)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=cases, own_domain=st.booleans())
    def run(case: Any, own_domain: bool) -> None:
        if own_domain and isinstance(case.body, dict):
            reach_past_the_sender_check(case.body, sender)
        headers = {**(case.headers or {}), **sender.headers}
        response = case.call(base_url=live_url, headers=headers, timeout=30)
        check(response)

    run()
