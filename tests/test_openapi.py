"""openapi/openapi.json is what the app describes (regenerate with `make openapi`)."""

from __future__ import annotations

import json
from pathlib import Path

from app.core.config import Settings
from app.main import create_app

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    generated = create_app(Settings(dev_mode=True)).openapi()
    committed = json.loads(COMMITTED.read_text())
    assert committed == json.loads(json.dumps(generated)), "run `make openapi` and commit"


def test_every_error_is_documented_in_sendgrids_shape() -> None:
    schema = json.loads(COMMITTED.read_text())
    send = schema["paths"]["/v1/send"]["post"]
    for status in ("400", "401", "403", "413"):
        assert status in send["responses"], status
        content = send["responses"][status]["content"]["application/json"]["schema"]
        assert content["$ref"].endswith("/ErrorResponse")
