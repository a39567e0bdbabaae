"""The processes as operators run them: `columba api --workers 2` adds up the metrics of both
workers and logs JSON from each; `columba worker --metrics-port` serves metrics and health."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx

from app.submission.tls import ensure_dev_certificate
from tests.fakes.mx import free_port
from tests.observability.support import Scrape
from tests.test_processes import production_env, running, until_healthy

REQUESTS = 40


async def test_two_api_workers_add_up_and_log_json(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's: wiped
    env = await production_env(tmp_path / "var", log_format="json", metrics_allow_ips="127.0.0.1")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ("api", "--port", str(port), "--workers", "2")
    async with running(*args, env=env, cwd=tmp_path) as process:
        await until_healthy(url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            before = Scrape.parse((await http.get("/metrics")).text)
            answers = await asyncio.gather(*(http.get("/healthz") for _ in range(REQUESTS)))
            assert {a.status_code for a in answers} == {200}
            after = await _scrape_once_counted(http, before)
        pids = {int(m) for f in metrics_dir.iterdir() if (m := _pid_of(f.name))}
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert _grown(before, after) == REQUESTS  # whichever worker answered each
    assert len(pids - {999999}) >= 2, "each worker keeps its values in files of its own"
    assert 999999 not in pids
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "http_request"]
    assert len([r for r in requests if r["route"] == "/healthz"]) >= REQUESTS
    assert {"ts", "level", "logger", "msg", "pid", "request_id"} <= set(requests[0])


HEALTHZ = {"route": "/healthz", "method": "GET", "status": "200"}


def _grown(before: Scrape, after: Scrape) -> float:
    """How many /healthz requests were counted between two scrapes."""
    total = "columba_http_requests_total"
    return after.value(total, **HEALTHZ) - before.value(total, **HEALTHZ)


async def _scrape_once_counted(http: httpx.AsyncClient, before: Scrape) -> Scrape:
    """A scrape that counts every request: a request is counted just after its response is
    sent, so a scrape right after the last answer may be a moment early (up to 5 s)."""
    for _ in range(50):
        after = Scrape.parse((await http.get("/metrics")).text)
        if _grown(before, after) >= REQUESTS:
            return after
        await asyncio.sleep(0.1)
    return after


def _pid_of(name: str) -> str | None:
    """The pid in a prometheus-client multiprocess file name (`counter_1234.db`)."""
    match = re.fullmatch(r"[a-z_]+_(\d+)\.db", name)
    return match.group(1) if match else None


async def test_the_worker_serves_metrics_and_health(tmp_path: Path, redis_url: str) -> None:
    env = await production_env(tmp_path / "var", redis_url=redis_url, metrics_allow_ips="127.0.0.1")
    port = free_port()
    async with (
        running("worker", "--metrics-port", str(port), env=env, cwd=tmp_path),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        await until_healthy(f"http://127.0.0.1:{port}")
        ready = await http.get("/readyz")
        page = await http.get("/metrics")
    assert ready.status_code == 200, ready.text
    scrape = Scrape.parse(page.text)
    assert scrape.families["columba_smtp_connections"] == "gauge"
    assert scrape.families["columba_queue_recipients"] == "gauge"
    assert scrape.value("columba_queue_recipients", state="due") == 0


async def test_the_smtp_listener_serves_metrics_and_health(tmp_path: Path, redis_url: str) -> None:
    cert, key = ensure_dev_certificate(tmp_path / "tls", "mta.columba.test")
    env = await production_env(
        tmp_path / "var",
        redis_url=redis_url,
        smtp_tls_cert=str(cert),
        smtp_tls_key=str(key),
    )
    port, metrics_port = free_port(), free_port()
    args = ("--port", str(port), "--tls-port", "0", "--metrics-port", str(metrics_port))
    async with (
        running("smtp", *args, env=env, cwd=tmp_path),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as http,
    ):
        await until_healthy(f"http://127.0.0.1:{metrics_port}")
        ready = await http.get("/readyz")
        anonymous = await http.get("/metrics")
    assert ready.status_code == 200, ready.text
    assert anonymous.status_code == 401  # no key, and no address allowed
