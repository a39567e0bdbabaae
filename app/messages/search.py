"""Activity search: find messages by recipient, sender, subject, status, category, metadata,
template, batch and acceptance time, newest first, a page at a time.

Every single filter is answered by one index whose last column is the message id, so a page is
a short ordered range scan whatever the filter's selectivity: recipients(account_id,
lower(email) | domain | status, message_id), messages(account_id, lower(from_email) |
template_id | batch_id, id), message_tags(account_id, tag, message_id) for categories and
metadata. With several filters the most selective kind drives the scan (DRIVERS) and the
others are checked on the rows it yields. Ids are time-ordered (app.core.ids), so "newest
first" is "highest id first" and the cursor is the last id of a page: messages accepted while a
client pages sort above its cursor and never shift the pages it has not read yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import NamedFromClause

from app.core import ids, jsontext
from app.core.errors import BadRequest
from app.delivery.idn import ascii_domain
from app.messages.models import (
    SUBJECT_INDEXED,
    Message,
    MessageTag,
    Recipient,
    RecipientStatus,
)

MAX_LIMIT = 1000
TAG_MAX = 255  # longer tags are stored (and looked up) as a hash
_CURSOR_PREFIX = "m1:"

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_RECIPIENTS: Table = Recipient.__table__  # type: ignore[assignment]
_TAGS: Table = MessageTag.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What a search matches; every field set must match (AND), unset fields match anything.

    - recipient: an address, matched exactly but case-insensitively (ASCII letters on
      SQLite), or `@domain` for every address at that domain (its A-label, exact).
    - sender: the message's From address, exact, case-insensitive.
    - subject: a case-insensitive prefix of the message's subject (for a template, its
      subject source); with subject_equals, the whole subject, exactly.
    - statuses: the recipient's current status is one of these.
    - category: one of the message's categories, exact.
    - metadata: (key, value) pairs of custom_args, each exact; a recipient's own custom_args
      count as the message's.
    - template_id, batch_id: exact.
    - message_id, recipient_id: one message, or one recipient's copy of it.
    - start (inclusive), end (exclusive): the time the message was accepted.
    Recipient-level conditions (recipient, statuses, recipient_id) must hold for one and the
    same recipient, and only recipients that meet them are listed with the message."""

    recipient: str | None = None
    sender: str | None = None
    subject: str | None = None
    subject_equals: bool = False
    statuses: tuple[RecipientStatus, ...] = ()
    category: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    template_id: str | None = None
    batch_id: str | None = None
    message_id: str | None = None
    recipient_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def selects_recipients(self) -> bool:
        """True when the filters name recipients, so only the matching ones are listed."""
        return bool(self.recipient or self.statuses or self.recipient_id)


@dataclass(frozen=True, slots=True)
class FoundRecipient:
    """A recipient of a found message and where its delivery stands."""

    id: str
    email: str
    status: str
    attempt_count: int
    last_code: int | None
    last_response: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """A message a search found, with its (matching) recipients."""

    id: str
    created_at: datetime
    from_email: str
    from_name: str | None
    subject: str
    categories: list[str]
    metadata: dict[str, Any]
    template_id: str | None
    batch_id: str | None
    recipient_count: int
    status_counts: dict[str, int]
    recipients: list[FoundRecipient] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results, newest first; `next_cursor` is None on the last page."""

    messages: list[FoundMessage]
    next_cursor: str | None


def encode_cursor(message_id: str) -> str:
    """The opaque cursor that continues after `message_id`."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + message_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The message id a cursor continues after; 400 when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError("not a search cursor")
        message_id = text.removeprefix(_CURSOR_PREFIX)
        ids.decode(message_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not a cursor this API returned", "cursor") from exc
    return message_id.upper()


def message_tag(kind: str, name: str, value: str | None = None) -> str:
    """The message_tags value for a category (`c`) or a metadata pair (`m`): long ones hashed,
    so that every tag fits a B-tree entry (PostgreSQL refuses entries over ~2.7 KB)."""
    tag = f"{kind}:{name}" if value is None else f"{kind}:{name}={value}"
    if len(tag) <= TAG_MAX:
        return tag
    return "h:" + hashlib.sha256(tag.encode()).hexdigest()


def metadata_text(value: Any) -> str:
    """A custom_args value as a metadata filter compares it: strings as they are."""
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    return jsontext.dumps(value)


def tags_of(categories: Iterable[str], metadata: Iterable[dict[str, Any]]) -> set[str]:
    """The tags a message is found by: its categories and every custom_args pair."""
    tags = {message_tag("c", category) for category in categories}
    for args in metadata:
        tags.update(message_tag("m", key, metadata_text(value)) for key, value in args.items())
    return tags


async def search(
    session: AsyncSession,
    account_id: str,
    filters: SearchFilters,
    cursor: str | None,
    limit: int,
    *,
    recipients_per_message: int = 10,
) -> SearchPage:
    """A page of the account's messages that match `filters`, newest first, after `cursor`
    (a `next_cursor` of an earlier page), at most `limit` (1..1000) of them."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    before = decode_cursor(cursor) if cursor else None
    dialect = session.get_bind().dialect.name
    query = _page_query(account_id, filters, before, limit + 1, dialect)
    found = list((await session.execute(query)).scalars())
    page_ids = found[:limit]
    messages = await _load(session, page_ids, filters, recipients_per_message)
    more = len(found) > limit
    return SearchPage(messages=messages, next_cursor=encode_cursor(page_ids[-1]) if more else None)


# --- the page of ids ---------------------------------------------------------------------


def _recipient_conditions(filters: SearchFilters, r: NamedFromClause) -> list[ColumnElement[bool]]:
    """Conditions on one recipient row."""
    conditions: list[ColumnElement[bool]] = []
    if filters.recipient:
        if filters.recipient.startswith("@"):
            conditions.append(r.c.domain == _domain(filters.recipient[1:]))
        else:
            conditions.append(func.lower(r.c.email) == func.lower(filters.recipient))
    if filters.statuses:
        conditions.append(r.c.status.in_([str(status) for status in filters.statuses]))
    if filters.recipient_id:
        conditions.append(r.c.id == filters.recipient_id)
    return conditions


def _message_conditions(
    filters: SearchFilters, m: NamedFromClause, dialect: str
) -> list[ColumnElement[bool]]:
    """Conditions on the message row (tags aside)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.sender:
        conditions.append(func.lower(m.c.from_email) == func.lower(filters.sender))
    if filters.subject:
        conditions.append(_subject_prefix(m, filters.subject, dialect))
        if filters.subject_equals:
            conditions.append(m.c.subject == filters.subject)
    if filters.template_id:
        conditions.append(m.c.template_id == filters.template_id)
    if filters.batch_id:
        conditions.append(m.c.batch_id == filters.batch_id)
    if filters.message_id:
        conditions.append(m.c.id == filters.message_id)
    if filters.start:
        conditions.append(m.c.created_at >= filters.start)
    if filters.end:
        conditions.append(m.c.created_at < filters.end)
    return conditions


def _subject_prefix(m: NamedFromClause, prefix: str, dialect: str) -> ColumnElement[bool]:
    """lower(subject) starts with `prefix`, in a form the prefix index serves."""
    # Literal bounds: a database matches a query to an expression index by its text, and
    # SQLite does not see through bound parameters.
    indexed = func.lower(func.substr(m.c.subject, _ONE, _SUBJECT_INDEXED))
    head = prefix[:SUBJECT_INDEXED]
    if dialect == "sqlite":
        # SQLite uses an index for LIKE only on a plain column: a range on the expression
        # instead, exact under its BINARY collation (UTF-8 bytes sort as code points).
        low = _ascii_lower(head)
        condition = and_(indexed >= low, indexed < low[:-1] + chr(ord(low[-1]) + 1))
    else:
        # PostgreSQL turns a constant-prefix LIKE into a range on a text_pattern_ops index.
        escaped = head.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        condition = indexed.like(func.lower(escaped) + "%", escape="\\")
    if len(prefix) > SUBJECT_INDEXED:  # the index holds the start; check the rest
        whole = func.lower(func.substr(m.c.subject, 1, len(prefix)))
        condition = and_(condition, whole == func.lower(prefix))
    return condition


_ONE: ColumnElement[Any] = literal_column("1")
_SUBJECT_INDEXED: ColumnElement[Any] = literal_column(str(SUBJECT_INDEXED))


def _tag_values(filters: SearchFilters) -> list[str]:
    """The tags a message must carry, the most selective (metadata) first."""
    tags = [message_tag("m", key, value) for key, value in filters.metadata]
    if filters.category is not None:
        tags.append(message_tag("c", filters.category))
    return tags


def _id_bounds(filters: SearchFilters, before: str | None) -> tuple[str | None, str | None]:
    """Message-id bounds (low inclusive, high exclusive) implied by the time range and the
    cursor: an id starts with its acceptance millisecond, which lets every index scan start
    and stop at the range (a second of slack: the id's clock is read just before
    created_at's; created_at then decides exactly)."""
    low = _id_at(filters.start - timedelta(seconds=1)) if filters.start else None
    high = _id_at(filters.end + timedelta(seconds=1)) if filters.end else None
    if before is not None and (high is None or before < high):
        high = before
    return low, high


def _id_at(moment: datetime) -> str:
    """The smallest id of the millisecond `moment` falls in."""
    millis = max(0, int(moment.timestamp() * 1000))
    return ids.encode(millis << 80)


# Which kind of filter drives the scan when several are set, most selective first.
DRIVERS = ("message", "recipient", "metadata", "batch", "template", "sender", "subject",
           "category", "domain", "status")  # fmt: skip


def driver_of(filters: SearchFilters) -> str:
    """The kind of filter whose index the scan follows (`all`: the messages' own)."""
    present = {
        "message": bool(filters.message_id or filters.recipient_id),
        "recipient": bool(filters.recipient and not filters.recipient.startswith("@")),
        "metadata": bool(filters.metadata),
        "batch": filters.batch_id is not None,
        "template": filters.template_id is not None,
        "sender": filters.sender is not None,
        "subject": bool(filters.subject),
        "category": filters.category is not None,
        "domain": bool(filters.recipient and filters.recipient.startswith("@")),
        "status": len(filters.statuses) == 1,
    }
    return next((kind for kind in DRIVERS if present[kind]), "all")


def _page_query(
    account_id: str, filters: SearchFilters, before: str | None, limit: int, dialect: str
) -> Select[str]:
    """The ids of the next `limit` matching messages, newest first."""
    m, r, t = _MESSAGES.alias("m"), _RECIPIENTS.alias("r"), _TAGS.alias("t")
    low, high = _id_bounds(filters, before)
    recipient_conditions = _recipient_conditions(filters, r)
    tags = _tag_values(filters)
    driver = driver_of(filters)
    if driver in ("recipient", "domain", "status") or (
        driver == "message" and filters.recipient_id
    ):
        key = r.c.message_id
        query = (
            select(key)
            .distinct()
            .select_from(r.join(m, m.c.id == r.c.message_id))
            .where(r.c.account_id == account_id, *recipient_conditions)
        )
        tag_checks = tags
    elif driver in ("metadata", "category"):
        key = t.c.message_id
        query = (
            select(key)
            .select_from(t.join(m, m.c.id == t.c.message_id))
            .where(t.c.account_id == account_id, t.c.tag == tags[0])
        )
        tag_checks = tags[1:]
        if recipient_conditions:
            query = query.where(_recipient_exists(m, recipient_conditions, r))
    else:
        key = m.c.id
        query = select(key).select_from(m)
        tag_checks = tags
        if recipient_conditions:
            query = query.where(_recipient_exists(m, recipient_conditions, r))
    query = query.where(m.c.account_id == account_id, *_message_conditions(filters, m, dialect))
    for tag in tag_checks:
        query = query.where(_tag_exists(m, tag))
    if low is not None:
        query = query.where(key >= low)
    if high is not None:
        query = query.where(key < high)
    return query.order_by(key.desc()).limit(limit)


def _recipient_exists(
    m: NamedFromClause, conditions: Sequence[ColumnElement[bool]], r: NamedFromClause
) -> ColumnElement[bool]:
    """Some recipient of the message meets every condition."""
    return exists().where(r.c.message_id == m.c.id, *conditions)


def _tag_exists(m: NamedFromClause, tag: str) -> ColumnElement[bool]:
    """The message carries `tag`."""
    t = _TAGS.alias()
    return exists().where(t.c.message_id == m.c.id, t.c.tag == tag)


# --- what the page shows ----------------------------------------------------------------------


async def _load(
    session: AsyncSession, page_ids: list[str], filters: SearchFilters, per_message: int
) -> list[FoundMessage]:
    """The messages of the page, in page order, with their recipients."""
    if not page_ids:
        return []
    m = _MESSAGES
    rows = (await session.execute(select(m).where(m.c.id.in_(page_ids)))).mappings()
    by_id = {row["id"]: row for row in rows}
    counts = await _status_counts(session, page_ids)
    listed = await _recipients(session, page_ids, filters, per_message)
    return [
        _found(by_id[message_id], counts.get(message_id, {}), listed.get(message_id, []))
        for message_id in page_ids
    ]


async def _status_counts(session: AsyncSession, page_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per message, how many recipients are in each status."""
    r = _RECIPIENTS
    query = (
        select(r.c.message_id, r.c.status, func.count())
        .where(r.c.message_id.in_(page_ids))
        .group_by(r.c.message_id, r.c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for message_id, status, count in await session.execute(query):
        counts.setdefault(message_id, {})[status] = count
    return counts


async def _recipients(
    session: AsyncSession, page_ids: list[str], filters: SearchFilters, per_message: int
) -> dict[str, list[FoundRecipient]]:
    """Per message, its first `per_message` recipients (matching ones, when the filters name
    recipients)."""
    r = _RECIPIENTS
    position = func.row_number().over(partition_by=r.c.message_id, order_by=r.c.id)
    inner = (
        select(r, position.label("position"))
        .where(r.c.message_id.in_(page_ids), *_recipient_conditions(filters, r))
        .subquery()
    )
    query = select(inner).where(inner.c.position <= per_message).order_by(inner.c.id)
    listed: dict[str, list[FoundRecipient]] = {}
    for row in (await session.execute(query)).mappings():
        listed.setdefault(row["message_id"], []).append(
            FoundRecipient(
                id=row["id"],
                email=row["email"],
                status=row["status"],
                attempt_count=row["attempt_count"],
                last_code=row["last_code"],
                last_response=row["last_response"],
                updated_at=row["updated_at"],
            )
        )
    return listed


def _found(row: Any, counts: dict[str, int], recipients: list[FoundRecipient]) -> FoundMessage:
    return FoundMessage(
        id=row["id"],
        created_at=row["created_at"],
        from_email=row["from_email"],
        from_name=row["from_name"],
        subject=row["subject"],
        categories=list(row["categories"] or []),
        metadata=dict(row["custom_args"] or {}),
        template_id=row["template_id"],
        batch_id=row["batch_id"],
        recipient_count=sum(counts.values()),
        status_counts=counts,
        recipients=recipients,
    )


# --- values ------------------------------------------------------------------------------------


def _ascii_lower(text: str) -> str:
    """Lower-cased as SQLite's lower() does (ASCII letters only), which PostgreSQL's agrees
    with on ASCII: the value compared with lower(column) on both databases."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _domain(name: str) -> str:
    """A domain in the form recipients.domain holds (A-label, lower case)."""
    try:
        return ascii_domain(name)
    except ValueError:
        return name.lower()
