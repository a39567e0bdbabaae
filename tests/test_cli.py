"""The `columba` command, run as a real process."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from app.core import migrate
from app.submission.tls import ensure_dev_certificate
from tests.fakes.mx import free_port

COLUMBA = [sys.executable, "-m", "app.cli"]
ROOT = str(Path(__file__).resolve().parent.parent)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a columba command and capture its output."""
    return subprocess.run(
        COLUMBA + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own SQLite database and a production-grade secret key."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(database_url)
    return {
        **os.environ,
        "COLUMBA_DATABASE_URL": database_url,
        "COLUMBA_SECRET_KEY": "cli-test-secret-" + "k" * 32,
        "COLUMBA_HOSTNAME": "mta.columba.test",
        "PYTHONPATH": ROOT,
    }


def test_keys_create_prints_the_key_once(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["keys", "create", "--name", "ci", "--scope", "mail.send"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert re.fullmatch(r"SG\.[\w-]{22}\.[\w-]{43}", key)
    listed = run(["keys", "list"], env, tmp_path)
    assert key.split(".")[1] in listed.stdout
    assert key.split(".")[2] not in listed.stdout
    assert "mail.send" in listed.stdout


def test_unknown_scope_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["keys", "create", "--name", "x", "--scope", "mail.sned"], env, tmp_path)
    assert result.returncode != 0
    assert "unknown scope" in result.stderr


def test_domains_add_prints_the_records_to_publish(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["domains", "add", "shop.example", "--account", "shop"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"cb\d{6}\._domainkey\.shop\.example\.\s+IN\s+TXT\s+\"v=DKIM1; k=rsa; p=", result.stdout
    )
    assert "v=spf1" in result.stdout
    # The bounce domain's MX (to `columba inbound`) and SPF (the VERP MAIL FROM lives there).
    assert re.search(r"bounces\.shop\.example\.\s+IN\s+MX\s+10 ", result.stdout)
    assert result.stdout.count("v=spf1") == 2
    assert "_dmarc.shop.example." in result.stdout
    again = run(["domains", "add", "shop.example", "--account", "shop"], env, tmp_path)
    assert again.returncode != 0
    listed = run(["domains", "list"], env, tmp_path)
    assert "shop.example" in listed.stdout
    assert "not verified" in listed.stdout


def test_production_commands_refuse_to_start_without_a_secret_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    unsafe = {k: v for k, v in env.items() if k != "COLUMBA_SECRET_KEY"}
    for command in (["api"], ["worker"], ["domains", "add", "x.example"]):
        result = run(command, unsafe, tmp_path)
        assert result.returncode != 0, command
        assert "COLUMBA_SECRET_KEY is not set" in result.stderr


async def test_dev_runs_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, smtp_port, submission_port, tls_port, inbound_port = (free_port() for _ in range(5))
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLUMBA_")} | {
        "PYTHONPATH": ROOT
    }
    process = await asyncio.create_subprocess_exec(
        *COLUMBA,
        "dev",
        "--inbound-port",
        str(inbound_port),
        "--port",
        str(port),
        "--smtp-port",
        str(smtp_port),
        "--submission-port",
        str(submission_port),
        "--submission-tls-port",
        str(tls_port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        output = ""
        async with asyncio.timeout(60):
            while "swaks" not in output:
                line = (await process.stdout.readline()).decode()
                assert line, f"columba dev exited early:\n{output}"
                output += line
        curl_line = next(line for line in output.splitlines() if line.strip().startswith("curl"))
        args = shlex.split(curl_line)
        headers = dict(args[i + 1].split(": ", 1) for i, arg in enumerate(args) if arg == "-H")
        payload = args[args.index("-d") + 1]
        async with httpx.AsyncClient() as http:
            response = await http.post(
                args[args.index("POST") + 1], content=payload, headers=headers
            )
        assert response.status_code == 202, response.text
        mailbox = tmp_path / "var" / "mailbox"
        async with asyncio.timeout(20):
            while not list(mailbox.glob("*.eml")):  # noqa: ASYNC110 (polling a directory)
                await asyncio.sleep(0.1)
        [captured] = list(mailbox.glob("*.eml"))
        assert b"Subject: Hello from Columba" in captured.read_bytes()
        assert b"DKIM-Signature:" in captured.read_bytes()
        # The banner's swaks line submits over SMTP (STARTTLS, self-signed certificate).
        assert f"127.0.0.1:{submission_port} (STARTTLS) and 127.0.0.1:{tls_port} (TLS)" in output
        swaks_line = next(line for line in output.splitlines() if "swaks" in line)
        swaks = await asyncio.create_subprocess_exec(
            *shlex.split(swaks_line), "--header", "Subject: Over SMTP",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        swaks_output, _ = await asyncio.wait_for(swaks.communicate(), 30)
        assert swaks.returncode == 0, swaks_output.decode()
        async with asyncio.timeout(20):
            while len(list(mailbox.glob("*.eml"))) < 2:  # noqa: ASYNC110 (polling a directory)
                await asyncio.sleep(0.1)
        over_smtp = [p.read_bytes() for p in mailbox.glob("*.eml") if p != captured]
        assert b"Subject: Over SMTP" in over_smtp[0]
        assert b"DKIM-Signature:" in over_smtp[0]
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = await process.stdout.read()
            code = await process.wait()
    assert code == 0, rest.decode()[-2000:]


def test_keys_carry_an_smtp_rate_limit(env: dict[str, str], tmp_path: Path) -> None:
    created = run(["keys", "create", "--name", "erp", "--smtp-rate-limit", "500"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    prefix = created.stdout.strip().split(".")[1]
    limited = run(["keys", "limit", f"SG.{prefix}", "--smtp-rate-limit", "20"], env, tmp_path)
    assert limited.returncode == 0, limited.stderr
    assert "smtp 20/min" in run(["keys", "list"], env, tmp_path).stdout


def test_smtp_refuses_to_start_without_a_certificate(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["smtp", "--port", str(free_port()), "--tls-port", "0"], env, tmp_path)
    assert result.returncode != 0
    assert "COLUMBA_SMTP_TLS_CERT and COLUMBA_SMTP_TLS_KEY must name" in result.stderr
    missing = {**env, "COLUMBA_SMTP_TLS_CERT": "/nonexistent.pem", "COLUMBA_SMTP_TLS_KEY": "/x"}
    result = run(["smtp"], missing, tmp_path)
    assert result.returncode != 0
    assert "COLUMBA_SMTP_TLS_CERT=/nonexistent.pem is not a readable file" in result.stderr


async def test_smtp_serves_submissions_and_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    cert, key = ensure_dev_certificate(tmp_path / "tls", "mta.columba.test")
    env = {
        **env,
        "COLUMBA_SMTP_TLS_CERT": str(cert),
        "COLUMBA_SMTP_TLS_KEY": str(key),
        "COLUMBA_REQUIRE_VERIFIED_DOMAINS": "false",
    }
    api_key = run(["keys", "create", "--name", "smtp"], env, tmp_path).stdout.strip()
    assert run(["domains", "add", "shop.test"], env, tmp_path).returncode == 0
    port, tls_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *COLUMBA, "smtp", "--port", str(port), "--tls-port", str(tls_port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        output = ""
        async with asyncio.timeout(30):
            while "implicit TLS" not in output:
                line = (await process.stdout.readline()).decode()
                assert line, f"columba smtp exited early:\n{output}"
                output += line
        for tls in (["--tls", "--port", str(port)], ["--tls-on-connect", "--port", str(tls_port)]):
            swaks = await asyncio.create_subprocess_exec(
                "swaks", "--server", "127.0.0.1", *tls, "--auth", "PLAIN",
                "--auth-user", "apikey", "--auth-password", api_key,
                "--from", "orders@shop.test", "--to", "someone@example.test",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            sent, _ = await asyncio.wait_for(swaks.communicate(), 30)
            assert swaks.returncode == 0, sent.decode()
            assert re.search(r"250 2\.0\.0 Ok: queued as \w{26}", sent.decode())
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = await process.stdout.read()
            code = await process.wait()
    assert code == 0, rest.decode()[-2000:]


async def test_inbound_listens_and_refuses_to_relay(env: dict[str, str], tmp_path: Path) -> None:
    added = run(["domains", "add", "shop.example", "--account", "shop"], env, tmp_path)
    assert added.returncode == 0, added.stderr
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *COLUMBA,
        "inbound",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # up to a minute: a loaded machine takes its time to import
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            break
        for rcpt in ("someone@elsewhere.test", "bounces+x-y@bounces.shop.example"):
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
                await smtp.mail("")
                with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                    await smtp.rcpt(rcpt)
                assert refused.value.code == 550
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.wait()
