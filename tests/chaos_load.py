"""The chaos test's client: sends at a steady rate through POST /v1/send, POST /v3/mail/send
(two API processes; a refused connection goes to the other one, as a load balancer would) and
SMTP submission (STARTTLS, AUTH PLAIN with an API key), and records every answer with when
it was asked and answered."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

CHANNELS = ("v1", "v3", "smtp")
DOMAINS = ("alpha.test", "beta.test")  # the recipients' domains, one MX host each


@dataclass(frozen=True)
class Send:
    """One request (or one SMTP transaction) to make, with its recipients."""

    index: int
    channel: str
    addresses: tuple[str, ...]


@dataclass
class Answer:
    """What one send got back: the HTTP status or SMTP reply code, 0 when no answer came."""

    send: Send
    started: float  # time.monotonic()
    ended: float
    code: int
    message_id: str | None = None
    stage: str = ""  # SMTP: the command answered (connect, auth, mail, rcpt, data)
    error: str = ""
    refused: tuple[str, ...] = ()  # SMTP: recipients refused while others were taken

    @property
    def accepted(self) -> bool:
        """202 or 250: every recipient is committed."""
        return self.code in (202, 250)

    @property
    def label(self) -> str:
        """`v1 202`, `smtp 451 data`, `v3 error`: how the summary groups answers."""
        code = str(self.code) if self.code else "error"
        stage = f" {self.stage}" if self.stage and self.code != 250 else ""
        return f"{self.send.channel} {code}{stage}"

    def within(self, start: float, end: float) -> bool:
        """Asked and answered inside [start, end]."""
        return self.started >= start and self.ended <= end


def plan(recipients: int, per_send: int) -> list[Send]:
    """`recipients` unique addresses in sends of `per_send`, the channels taking turns (two
    sends of each API for one SMTP transaction)."""
    turns = ("v1", "v3", "v1", "v3", "smtp")
    sends = []
    for index in range(recipients // per_send):
        addresses = tuple(f"c{index}r{j}@{DOMAINS[j % len(DOMAINS)]}" for j in range(per_send))
        sends.append(Send(index, turns[index % len(turns)], addresses))
    return sends


@dataclass
class Load:
    """Sends a plan at a steady rate and keeps every answer."""

    api_urls: tuple[str, ...]
    smtp_port: int
    smtp_ca: str  # PEM of the CA that signed the listener's certificate
    key: str
    sender: str
    answers: list[Answer] = field(default_factory=list)
    max_in_flight: int = 64

    async def run(self, sends: list[Send], seconds: float) -> None:
        """Start the sends evenly over `seconds` (each one when its turn comes, whether or
        not earlier ones were answered, up to `max_in_flight`), then wait for every answer."""
        gate = asyncio.Semaphore(self.max_in_flight)
        context = ssl.create_default_context(cadata=self.smtp_ca)
        limits = httpx.Limits(max_connections=self.max_in_flight)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            tasks = []
            start = time.monotonic()
            for number, send in enumerate(sends):
                await asyncio.sleep(
                    max(0.0, start + number * seconds / len(sends) - time.monotonic())
                )
                tasks.append(asyncio.create_task(self._one(gate, http, context, send)))
            await asyncio.gather(*tasks)

    async def _one(
        self, gate: asyncio.Semaphore, http: httpx.AsyncClient, context: ssl.SSLContext, send: Send
    ) -> None:
        """Make one send and record its answer."""
        async with gate:
            started = time.monotonic()
            if send.channel == "smtp":
                answer = await self._smtp(send, context, started)
            else:
                answer = await self._http(http, send, started)
            self.answers.append(answer)

    async def _http(self, http: httpx.AsyncClient, send: Send, started: float) -> Answer:
        """POST the send to one API, or to the other one if the first refuses to connect."""
        path, body = _http_request(send, self.sender)
        urls = self.api_urls[send.index % 2 :] + self.api_urls[: send.index % 2]
        error = ""
        for url in urls:
            try:
                response = await http.post(
                    url + path, json=body, headers={"Authorization": f"Bearer {self.key}"}
                )
            except httpx.ConnectError as exc:  # nothing was sent: try the other process
                error = repr(exc)
                continue
            except httpx.TransportError as exc:  # sent, never answered (a killed process)
                return Answer(send, started, time.monotonic(), 0, error=repr(exc))
            return Answer(
                send, started, time.monotonic(), response.status_code,
                message_id=_message_id(send, response), error=_error_text(response),
            )  # fmt: skip
        return Answer(send, started, time.monotonic(), 0, error=error)

    async def _smtp(self, send: Send, context: ssl.SSLContext, started: float) -> Answer:
        """One SMTP session for the send: STARTTLS, AUTH, MAIL, RCPT…, DATA, QUIT."""
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=self.smtp_port, start_tls=True, tls_context=context,
            timeout=30,
        )  # fmt: skip
        stage = "connect"
        try:
            await client.connect()
            stage = "auth"
            await client.ehlo()  # RFC 3207 §4.2: STARTTLS forgets the first EHLO
            await client.auth_plain("apikey", self.key)
            stage = "data"
            refused, reply = await client.sendmail(
                self.sender, list(send.addresses), _mime(send, self.sender)
            )
            await _quit(client)
            return Answer(
                send, started, time.monotonic(), 250, message_id=reply.split()[-1],
                refused=tuple(refused),
            )  # fmt: skip
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            return Answer(send, started, time.monotonic(), refusal.code, stage="rcpt",
                          error=refusal.message)  # fmt: skip
        except aiosmtplib.SMTPSenderRefused as exc:
            return Answer(
                send, started, time.monotonic(), exc.code, stage="mail", error=exc.message
            )
        except aiosmtplib.SMTPResponseException as exc:
            return Answer(send, started, time.monotonic(), exc.code, stage=stage, error=exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Answer(send, started, time.monotonic(), 0, stage=stage, error=repr(exc))
        finally:
            client.close()

    def samples(self) -> dict[str, str]:
        """One error text for each kind of answer that was not an acceptance."""
        return {a.label: a.error[:160] for a in self.answers if not a.accepted and a.error}

    def counts(self) -> Counter[str]:
        """Answers by channel, code and stage."""
        return Counter(answer.label for answer in self.answers)

    def accepted(self) -> list[Answer]:
        """The answers that promised delivery (202, 250)."""
        return [answer for answer in self.answers if answer.accepted]


def _http_request(send: Send, sender: str) -> tuple[str, dict[str, Any]]:
    """The path and body of an API send."""
    subject, text = f"chaos {send.index}", f"Message {send.index} of the chaos test."
    if send.channel == "v1":
        return "/v1/send", {
            "from": sender, "to": list(send.addresses), "subject": subject, "text": text,
        }  # fmt: skip
    return "/v3/mail/send", {
        "personalizations": [{"to": [{"email": address} for address in send.addresses]}],
        "from": {"email": sender},
        "subject": subject,
        "content": [{"type": "text/plain", "value": text}],
    }


def _message_id(send: Send, response: httpx.Response) -> str | None:
    """The accepted message's id: in the body (/v1/send) or X-Message-Id (/v3/mail/send)."""
    if response.status_code != 202:
        return None
    if send.channel == "v1":
        return str(response.json()["id"])
    return response.headers["x-message-id"]


def _error_text(response: httpx.Response) -> str:
    """The body of a refusal, for the summary."""
    return "" if response.status_code == 202 else response.text[:300]


def _mime(send: Send, sender: str) -> bytes:
    """The message submitted over SMTP."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(send.addresses)
    message["Subject"] = f"chaos {send.index}"
    message.set_content(f"Message {send.index} of the chaos test.")
    return message.as_bytes()


async def _quit(client: aiosmtplib.SMTP) -> None:
    """QUIT politely; the message is queued whatever happens to the QUIT."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()
