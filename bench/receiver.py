"""A minimal webhook receiver for the feedback benchmark: answers 200 to every POST.

    python -m bench.receiver PORT

Runs in its own process so that the dispatcher being measured does not share a CPU with it."""

from __future__ import annotations

import sys

import uvicorn
from starlette.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body, answer 200."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
