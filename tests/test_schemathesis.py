"""The contract: schemathesis against openapi/openapi.json, every operation, positive and
negative cases, with another account's ids among the path parameters. No answer may be a
server error, a status the document does not declare, or a body that does not match its
schema; another account's ids are never answered with 2xx; and once the fuzzing is over, the
fuzzed account's list and read endpoints still answer 200 and what it got accepted renders.

Each operation gets schemathesis' coverage cases (boundary values: empty, longest, largest,
just past each limit, wrong types, other methods) with this account's ids (and the first one
with the other account's), then positive and negative fuzzing cases with ids of either.

Bounded by examples, not time, and deterministic, so that CI never fails on a new random
draw: `COLUMBA_FUZZ_EXAMPLES` (default 12 per operation and mode, four times that for the two
send endpoints) and `COLUMBA_FUZZ_SEED` explore further locally."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.delivery import mime
from app.messages.dispatch import content_of, load_messages
from app.messages.models import Message
from app.messages.personalize import needs_rendering
from tests.fakes.dns import FakeDNS
from tests.support import Sender, api_in_thread, make_sender

DOCUMENT = json.loads(
    (Path(__file__).resolve().parent.parent / "openapi" / "openapi.json").read_text()
)
MAX_ITEMS = 4


def fuzzing_profile(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the fuzzer reads it. Arrays and maps of request bodies hold at most
    MAX_ITEMS items, so that examples are spent on variety rather than size (limits have
    tests of their own), and authentication is left out: the test always sends a valid key
    (keys and scopes have tests of their own). Everything responses use is untouched."""
    profile = copy.deepcopy(document)
    for operations in profile["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    schemas = profile["components"]["schemas"]
    in_responses = _referenced(
        [op.get("responses") for ops in profile["paths"].values() for op in ops.values()], schemas
    )
    for name, schema in schemas.items():
        if name not in in_responses:
            _clamp(schema)
    return profile


def _referenced(roots: list[Any], schemas: dict[str, Any]) -> set[str]:
    """The component schemas reachable from `roots`."""
    found: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.removeprefix("#/components/schemas/")
            if ref.startswith("#/components/schemas/") and name not in found:
                found.add(name)
                stack.append(schemas[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _clamp(node: Any) -> None:
    """At most MAX_ITEMS items in every array and map under `node`."""
    if isinstance(node, dict):
        if node.get("type") == "array":
            node["maxItems"] = min(node.get("maxItems", MAX_ITEMS), MAX_ITEMS)
        if node.get("type") == "object" and "additionalProperties" in node:
            node["maxProperties"] = min(node.get("maxProperties", MAX_ITEMS), MAX_ITEMS)
        for child in node.values():
            _clamp(child)
    elif isinstance(node, list):
        for child in node:
            _clamp(child)


SCHEMA = schemathesis.openapi.from_dict(fuzzing_profile(DOCUMENT))
# Deletions last, so that the other operations find the seeded objects still there.
OPERATIONS = sorted(
    (SCHEMA[path][method] for path, ops in DOCUMENT["paths"].items() for method in ops),
    key=lambda operation: operation.method.upper() == "DELETE",
)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Random cases per operation beyond the coverage cases: 12 on PostgreSQL (the production
# database, whose stricter types found most of the 500s), 6 in `make test`'s SQLite run, which
# CI runs beside it on the same two cores.
EXAMPLES = int(
    os.environ.get(
        "COLUMBA_FUZZ_EXAMPLES", "12" if os.environ.get("COLUMBA_TEST_DATABASE_URL") else "6"
    )
)
SEED = os.environ.get("COLUMBA_FUZZ_SEED")  # unset: the same cases every run
SEND_EXAMPLES = EXAMPLES * 4  # the two send endpoints hold most of the rules
OPAQUE_IDS = ("batch_id", "message_id", "template_id", "version_id", "webhook_id", "group_id")
SEND_PATHS = ("/v1/send", "/v3/mail/send")


@dataclass
class Ids:
    """The ids of what one account owns, by path parameter name."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        """Remember `value` as a `name` of this account."""
        self.values.setdefault(name, []).append(value)


@dataclass
class Report:
    """What the fuzzing found, and how much it did."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def fail(self, label: str, title: str, detail: str) -> None:
        """Keep the first example of each kind of failure."""
        self.failures.setdefault((label, title), detail)


@pytest_asyncio.fixture
async def rival(db: Database, dns_server: FakeDNS, settings: Settings) -> Sender:
    """A second account, whose ids the first one's key must never reach."""
    return await make_sender(db, dns_server, settings, account="rival", domain="rival.test")


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    """The API on its own thread: schemathesis calls it synchronously."""
    with api_in_thread(settings) as url:
        yield url


def seed_account(http: requests.Session, url: str, account: Sender) -> Ids:
    """One of everything an account can own, made through the API."""
    ids = Ids()

    def post(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = http.post(url + path, json=body, headers=account.headers, timeout=30)
        assert response.status_code in (200, 201, 202), (path, response.text)
        return response.json() if response.content else {}

    batch = post("/v1/batches")["id"]
    ids.add("batch_id", batch)
    ids.add("batch_id", post("/v3/mail/batch")["batch_id"])
    post("/v3/user/scheduled_sends", {"batch_id": batch, "status": "pause"})
    sent = post(
        "/v1/send",
        {"from": account.address(), "to": ["someone@example.test"], "subject": "Hi", "text": "Hi"},
    )
    ids.add("message_id", sent["id"])
    version = {"name": "v1", "subject": "Hi {{ name }}", "text": "Hi {{ name }}"}
    template = post("/v1/templates", {"name": "welcome", "version": version})
    ids.add("template_id", template["id"])
    ids.add("version_id", template["versions"][0]["id"])
    ids.add("webhook_id", post("/v1/webhooks", {"url": "http://127.0.0.1:9/hook"})["id"])
    email = f"gone@{account.domain.name}"
    post("/v1/suppressions", {"suppressions": [{"email": email, "type": "bounce"}]})
    ids.add("email", email)
    group = post("/v3/asm/groups", {"name": "News", "description": "Weekly"})
    ids.add("group_id", str(group["id"]))
    post(f"/v3/asm/groups/{group['id']}/suppressions", {"recipient_emails": [email]})
    return ids


def reach_past_the_sender_check(path: str, body: dict[str, Any], sender: Sender) -> None:
    """Send from the account's own domain, to someone, with a subject and a body, so that
    generated requests also reach templates, batches, suppressions and the database."""
    body["from"] = {"email": sender.address()}
    body["subject"] = body.get("subject") or "Hello."
    if path == "/v3/mail/send":
        body["personalizations"] = body.get("personalizations") or [
            {"to": [{"email": "someone@example.test"}]}
        ]
        if not (body.get("content") or body.get("template_id")):
            body["content"] = [{"type": "text/plain", "value": "Hello."}]
        return
    if bool(body.get("to")) == bool(body.get("recipients")):
        body["to"], body["recipients"] = ["someone@example.test"], []
    if not (body.get("text") or body.get("html") or body.get("template_id")):
        body["text"] = "Hello."


Choose = Callable[[Sequence[Any]], Any]


def fuzz(operation: Any, context: FuzzContext) -> None:
    """Run one operation's coverage cases (schemathesis' boundary values: empty, longest,
    largest, just past each limit, wrong types), then positive and negative fuzzing cases;
    record what fails."""
    modes = [GenerationMode.POSITIVE]
    if _can_be_invalid(operation):
        modes.append(GenerationMode.NEGATIVE)
    config = operation.schema.config.generation_for(operation=operation)
    turn = itertools.count()

    def cycle(options: Sequence[Any]) -> Any:
        return options[next(turn) % len(options)]

    cases = operation.schema.iter_coverage_cases(
        operation, generation_modes=modes, generation_config=config
    )
    for index, case in enumerate(cases):
        positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
        if index == 0 and {p.name for p in operation.path_parameters} & set(OPAQUE_IDS):
            context.call(case, cycle, positive=positive, source="rival")
        context.call(case, cycle, positive=positive, source="own")
    examples = SEND_EXAMPLES if operation.path in SEND_PATHS else EXAMPLES
    for mode in modes:
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            strategy = st.one_of(strategy, *operation.get_strategies_from_examples())
        _run(strategy, examples, context, positive=mode is GenerationMode.POSITIVE)


def _run(strategy: Any, examples: int, context: FuzzContext, *, positive: bool) -> None:
    """Call `examples` cases drawn from `strategy` (no shrinking: failures are collected)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        context.call(case, lambda options: data.draw(st.sampled_from(options)), positive=positive)

    if SEED is not None:
        run = seed(int(SEED))(run)
    run()


def _can_be_invalid(operation: Any) -> bool:
    """Negative cases need something that can be wrong: a body, or a query or header
    parameter (path parameters here are strings that may be anything)."""
    definition = operation.definition.raw
    parameters = definition.get("parameters", [])
    return "requestBody" in definition or any(p["in"] != "path" for p in parameters)


@dataclass
class FuzzContext:
    """What every case needs: where to send it, as whom, and whose ids to use."""

    url: str
    http: requests.Session
    sender: Sender
    own: Ids
    rival: Ids
    report: Report

    def call(self, case: Any, choose: Choose, *, positive: bool, source: str = "") -> None:
        """Send one case (with pooled ids: the `source` account's, or drawn), check the
        answer, record failures."""
        rival_ids = self._use_pooled_ids(case, choose, source)
        if case.query and "wait" in case.query:
            case.query["wait"] = 0  # long polls would only cost time
        own_domain = positive or choose([True, False])
        if case.path in SEND_PATHS and isinstance(case.body, dict) and own_domain:
            reach_past_the_sender_check(case.path, case.body, self.sender)
        headers = {**(case.headers or {}), **self.sender.headers}
        response = case.call(base_url=self.url, session=self.http, headers=headers, timeout=30)
        label = case.operation.label
        self.report.cases[label] += 1
        self.report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseException as group:  # schemathesis' FailureGroup is a BaseExceptionGroup
            for failure in getattr(group, "exceptions", [group]):
                title = getattr(failure, "title", type(failure).__name__)
                self.report.fail(label, title, _detail(case, response, headers, self.url))
        if rival_ids and response.status_code < 300:
            title = f"another account's {', '.join(rival_ids)} answered {response.status_code}"
            self.report.fail(label, title, _detail(case, response, headers, self.url))

    def _use_pooled_ids(self, case: Any, choose: Choose, source: str) -> list[str]:
        """Replace path parameters with this account's or the rival's ids, or keep the
        generated ones; returns the names given a rival's opaque id."""
        rival_ids = []
        for name in list(case.path_parameters or {}):
            own, theirs = self.own.values.get(name, []), self.rival.values.get(name, [])
            source = source or choose(["generated", "own", "rival"])
            if source == "own" and own:
                case.path_parameters[name] = choose(own)
            elif source == "rival" and theirs:
                case.path_parameters[name] = choose(theirs)
                rival_ids += [name] if name in OPAQUE_IDS else []
        return rival_ids


def _detail(case: Any, response: Any, headers: dict[str, str], url: str) -> str:
    """How to see the failure again."""
    curl = case.as_curl_command(headers=headers, base_url=url)
    curl = re.sub(r"Bearer [^']+", "Bearer $KEY", curl)
    return f"{curl[:2000]}\n  -> {response.status_code} {response.text[:500]}"


@pytest.mark.timeout(600)
async def test_every_operation_keeps_the_contract(
    live_url: str, sender: Sender, rival: Sender, dns_server: FakeDNS, db: Database
) -> None:
    dns_server.add_a("hooks.shop.example", "127.0.0.1")  # the webhook example's host
    # In a thread: the cases are sent synchronously, while this loop serves DNS.
    report = await asyncio.to_thread(run_the_contract, live_url, sender, rival)
    print(  # the figures the closing note quotes (pytest -s shows them)
        f"\nschemathesis: {len(report.cases)} operations, {sum(report.cases.values())} cases, "
        f"statuses {dict(sorted(report.statuses.items()))}, {len(report.failures)} failures"
    )
    assert len(report.cases) == len(OPERATIONS)
    assert not report.failures, "\n\n".join(
        f"{label}: {title}\n  {detail}" for (label, title), detail in report.failures.items()
    )
    await assert_accepted_sends_render(live_url, sender, db)


def run_the_contract(url: str, sender: Sender, rival: Sender) -> Report:
    """Seed both accounts, fuzz every operation, then read everything the account has."""
    http = requests.Session()
    context = FuzzContext(
        url=url,
        http=http,
        sender=sender,
        own=seed_account(http, url, sender),
        rival=seed_account(http, url, rival),
        report=Report(),
    )
    for operation in OPERATIONS:
        fuzz(operation, context)
    assert_nothing_left_behind(http, url, sender, context.own)
    return context.report


READ_PATHS = [
    "/v1/events?limit=1000",
    "/v1/templates",
    "/v3/templates?generations=legacy,dynamic&page_size=200",
    "/v1/webhooks",
    "/v1/suppressions?limit=1000",
    "/v1/stats?start=2020-01-01",
    "/v3/stats?start_date=2020-01-01",
    "/v3/categories/stats?start_date=2020-01-01&categories=a",
    "/v3/user/scheduled_sends",
    "/v3/asm/groups",
    "/v3/asm/suppressions",
    *[
        f"/v3/suppression/{name}"
        for name in ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
    ],
]


def assert_nothing_left_behind(
    http: requests.Session, url: str, sender: Sender, seeded: Ids
) -> None:
    """After the fuzzing, every list and read endpoint of the account answers 200, and so
    does every object they list."""

    def get(path: str) -> Any:
        response = http.get(url + path, headers=sender.headers, timeout=30)
        assert response.status_code == 200, (path, response.text[:500])
        return response.json()

    for path in READ_PATHS:
        get(path)
    cursor = "0"
    while True:  # every event of the feed
        page = get(f"/v1/events?limit=1000&after={cursor}")
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    for template in get("/v1/templates"):
        get(f"/v1/templates/{template['id']}")
        for version in template["versions"]:
            get(f"/v1/templates/{template['id']}/versions/{version['id']}")
    for webhook in get("/v1/webhooks")["webhooks"]:
        get(f"/v1/webhooks/{webhook['id']}")
        get(f"/v1/webhooks/{webhook['id']}/deliveries")
    for batch in seeded.values["batch_id"]:
        get(f"/v1/batches/{batch}")
    for group in get("/v3/asm/groups"):
        get(f"/v3/asm/groups/{group['id']}")
        get(f"/v3/asm/groups/{group['id']}/suppressions")
    send = {"from": sender.address(), "to": ["after@example.test"], "subject": "s", "text": "t"}
    after = http.post(url + "/v1/send", json=send, headers=sender.headers, timeout=30)
    assert after.status_code == 202, after.text


async def assert_accepted_sends_render(url: str, sender: Sender, db: Database) -> None:
    """The sends the fuzzing got accepted render (plain ones; a template renders per
    recipient and may drop one) and their message views answer 200."""
    async with db.session() as session:
        query = select(Message.id).where(Message.account_id == sender.account_id)
        ids = list(await session.scalars(query))
        loaded = await load_messages(session, message_ids=ids)
    assert len(loaded) > 10, "hardly any generated send was accepted: the fuzzing reached little"
    http = requests.Session()
    for message in loaded.values():
        if not needs_rendering(message):
            mime.render(content_of(message))
        path = f"{url}/v1/messages/{message.message.id}"
        view = await asyncio.to_thread(http.get, path, headers=sender.headers, timeout=30)
        assert view.status_code == 200, view.text
