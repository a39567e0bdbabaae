"""app.delivery stays framework-free: no fastapi, arq or ORM session code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import app.delivery

FORBIDDEN = ("fastapi", "starlette", "arq", "sqlalchemy")


def test_delivery_core_imports_no_framework() -> None:
    package = Path(app.delivery.__file__).parent
    modules = sorted(f"app.delivery.{path.stem}" for path in package.glob("*.py"))
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"app.delivery pulled in: {result.stdout.strip()}"
