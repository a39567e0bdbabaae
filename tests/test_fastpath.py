"""The send routes served by app/fastpath.py keep everything FastAPI's routing gave them:
the body limit, the rate-limit headers, strict JSON, NUL refused in the URL, the error
handlers, and the router for every other method and path."""

from __future__ import annotations

import httpx

from tests.support import Sender


async def test_the_fast_path_answers_as_the_router_did(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    body = {"from": sender.address(), "to": ["x@example.test"], "subject": "Hi", "text": "Hi"}
    accepted = await client.post("/v1/send", json=body, headers=sender.headers)
    assert accepted.status_code == 202
    assert accepted.headers["X-RateLimit-Limit"]
    nul = await client.post("/v1/send?x=%00", json=body, headers=sender.headers)
    assert nul.status_code == 400
    surrogate = await client.post(
        "/v3/mail/send",
        content=b'{"subject": "\\ud800"}',
        headers={**sender.headers, "content-type": "application/json"},
    )
    assert surrogate.status_code == 400
    assert "surrogates" in surrogate.json()["errors"][0]["message"]
    malformed = await client.post(
        "/v1/send", content=b"{", headers={**sender.headers, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["message"] == "JSON decode error"
    unauthorised = await client.post("/v1/send", json=body)
    assert unauthorised.status_code == 401
    assert unauthorised.headers["X-RateLimit-Limit"]


async def test_other_methods_and_paths_still_reach_the_router(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    assert (await client.get("/v1/send", headers=sender.headers)).status_code == 405
    assert (await client.put("/v3/mail/send", headers=sender.headers)).status_code == 405
    too_large = await client.post(
        "/v1/send",
        content=b"x" * (64 << 20),
        headers={**sender.headers, "content-length": str(64 << 20)},
    )
    assert too_large.status_code == 413
