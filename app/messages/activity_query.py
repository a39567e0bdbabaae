"""SendGrid's Email Activity query language (`GET /v3/messages?query=…`), parsed into the
activity search's filters (app.messages.search).

The grammar (keywords in any case; strings in double quotes, or the curly quotes SendGrid's
own examples use):

    query      := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := term ("AND" term)*
    term       := "(" or_expr ")" | "Contains" "(" field "," string ")" | condition
    condition  := field "=" value | field "LIKE" string | field "IN" "(" string ("," string)* ")"
                | field "BETWEEN" time "AND" time | field ("<" | "<=" | ">" | ">=") time
    field      := name | "unique_args" "[" string "]"
    value      := string | time
    time       := "TIMESTAMP" string          (ISO 8601)

A query becomes an OR of ANDs (disjunctive normal form), each AND one SearchFilters; the
router runs each and merges the pages. Conditions that no index can serve (NOT, negations,
infix LIKE patterns) are refused with a 400 naming the position, not evaluated by scanning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from app.messages.models import RecipientStatus
from app.messages.search import SearchFilters

MAX_QUERY = 2000  # characters
MAX_GROUPS = 32  # AND groups once OR and IN are expanded

# SendGrid's three activity statuses and the recipient statuses each covers.
SENDGRID_STATUSES: dict[str, tuple[RecipientStatus, ...]] = {
    "processed": (
        RecipientStatus.SCHEDULED,
        RecipientStatus.QUEUED,
        RecipientStatus.PAUSED,
        RecipientStatus.SENDING,
        RecipientStatus.DEFERRED,
    ),
    "delivered": (RecipientStatus.DELIVERED,),
    "not_delivered": (
        RecipientStatus.BOUNCED,
        RecipientStatus.DROPPED,
        RecipientStatus.EXPIRED,
        RecipientStatus.CANCELLED,
    ),
}
FIELDS = frozenset(
    {"to_email", "from_email", "subject", "status", "msg_id", "categories", "template_id",
     "last_event_time", "unique_args"}
)  # fmt: skip


class QueryError(ValueError):
    """The query cannot be parsed or served; `position` is the 0-based offset it points at."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Token:
    """A lexical token: its kind (`word`, `string`, `op`, `end`), text and offset."""

    kind: str
    text: str
    position: int


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|“[^”]*”|'(?:[^'\\]|\\.)*')
      | (?P<op><=|>=|!=|<>|[=<>(),\[\]])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


def tokenize(query: str) -> list[Token]:
    """The tokens of `query`, ending with an `end` token; QueryError at a stray character."""
    tokens = []
    position = 0
    while position < len(query):
        if query[position:].isspace():
            break
        match = _TOKEN.match(query, position)
        if match is None or match.lastgroup is None:
            at = position + len(query[position:]) - len(query[position:].lstrip())
            raise QueryError(f"unexpected character {query[at]!r}", at)
        kind = match.lastgroup
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(query)))
    return tokens


def _unquote(token: Token) -> str:
    """A string token's value."""
    body = token.text[1:-1]
    if token.text[0] == "“":
        return body
    return re.sub(r"\\(.)", r"\1", body)


# --- the syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison: `field op values` (unique_args carries its key in `key`)."""

    field: str
    op: str
    values: tuple[str, ...]
    position: int
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Both:
    """AND."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Either:
    """OR."""

    left: Node
    right: Node


Node = Condition | Both | Either


class _Parser:
    """Recursive descent over the tokens."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.current
        self.index += 1
        return token

    def at_word(self, *words: str) -> bool:
        return self.current.kind == "word" and self.current.text.upper() in words

    def expect_op(self, op: str) -> Token:
        if self.current.kind != "op" or self.current.text != op:
            raise QueryError(f"expected {op!r}, found {self._shown()}", self.current.position)
        return self.take()

    def expect_word(self, word: str) -> Token:
        if not self.at_word(word):
            raise QueryError(f"expected {word}, found {self._shown()}", self.current.position)
        return self.take()

    def expect_string(self) -> str:
        if self.current.kind != "string":
            raise QueryError(
                f"expected a quoted string, found {self._shown()}", self.current.position
            )
        return _unquote(self.take())

    def _shown(self) -> str:
        return "the end" if self.current.kind == "end" else repr(self.current.text)

    def query(self) -> Node:
        if self.current.kind == "end":
            raise QueryError("the query is empty", 0)
        node = self.or_expr()
        if self.current.kind != "end":
            raise QueryError(
                f"expected AND, OR or the end, found {self._shown()}", self.current.position
            )
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.at_word("OR"):
            self.take()
            node = Either(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.term()
        while self.at_word("AND"):
            self.take()
            node = Both(node, self.term())
        return node

    def term(self) -> Node:
        if self.current.kind == "op" and self.current.text == "(":
            self.take()
            node = self.or_expr()
            self.expect_op(")")
            return node
        if self.at_word("NOT"):
            raise QueryError("NOT is not supported", self.current.position)
        if self.at_word("CONTAINS"):
            return self.contains()
        return self.condition()

    def contains(self) -> Condition:
        start = self.take().position
        self.expect_op("(")
        field, key = self.field()
        self.expect_op(",")
        value = self.expect_string()
        self.expect_op(")")
        return Condition(field, "contains", (value,), start, key)

    def field(self) -> tuple[str, str | None]:
        token = self.current
        if token.kind != "word":
            raise QueryError(f"expected a field name, found {self._shown()}", token.position)
        name = self.take().text.lower()
        if name not in FIELDS:
            raise QueryError(f"unknown field {token.text!r}", token.position)
        if name != "unique_args":
            return name, None
        self.expect_op("[")
        key = self.expect_string()
        self.expect_op("]")
        return name, key

    def condition(self) -> Condition:
        start = self.current.position
        field, key = self.field()
        token = self.current
        if token.kind == "op" and token.text in ("=", "<", "<=", ">", ">="):
            self.take()
            return Condition(field, token.text, (self.value(),), start, key)
        if token.kind == "op" and token.text in ("!=", "<>"):
            raise QueryError("negations are not supported", token.position)
        if self.at_word("LIKE"):
            self.take()
            return Condition(field, "like", (self.expect_string(),), start, key)
        if self.at_word("IN"):
            return Condition(field, "in", self.values(), start, key)
        if self.at_word("BETWEEN"):
            self.take()
            low = self.time()
            self.expect_word("AND")
            return Condition(field, "between", (low, self.time()), start, key)
        if self.at_word("NOT"):
            raise QueryError("NOT is not supported", token.position)
        raise QueryError(f"expected an operator, found {self._shown()}", token.position)

    def values(self) -> tuple[str, ...]:
        self.take()
        self.expect_op("(")
        found = [self.expect_string()]
        while self.current.kind == "op" and self.current.text == ",":
            self.take()
            found.append(self.expect_string())
        self.expect_op(")")
        return tuple(found)

    def value(self) -> str:
        if self.at_word("TIMESTAMP"):
            return self.time()
        return self.expect_string()

    def time(self) -> str:
        self.expect_word("TIMESTAMP")
        return self.expect_string()


def parse(query: str) -> Node:
    """The syntax tree of `query`; QueryError with the offending position otherwise."""
    if len(query) > MAX_QUERY:
        raise QueryError(f"the query is longer than {MAX_QUERY} characters", MAX_QUERY)
    return _Parser(tokenize(query)).query()


# --- to filters ---------------------------------------------------------------------------------


def to_filters(query: str) -> list[SearchFilters]:
    """The AND groups of `query` as search filters (groups that cannot match left out)."""
    result = []
    for group in _dnf(parse(query)):
        filters: SearchFilters | None = SearchFilters()
        for condition in group:
            filters = _apply(filters, condition) if filters is not None else None
        if filters is not None:
            result.append(filters)
    return result


def _dnf(node: Node) -> list[list[Condition]]:
    """The conditions of each alternative; IN on a field other than status is an OR."""
    if isinstance(node, Either):
        groups = _dnf(node.left) + _dnf(node.right)
    elif isinstance(node, Both):
        groups = [left + right for left in _dnf(node.left) for right in _dnf(node.right)]
    elif node.op == "in" and node.field != "status":
        groups = [[replace(node, op="=", values=(value,))] for value in node.values]
    else:
        groups = [[node]]
    if len(groups) > MAX_GROUPS:
        raise QueryError(f"the query expands to more than {MAX_GROUPS} alternatives", 0)
    return groups


def _apply(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    """`filters` narrowed by `condition`; None when the two cannot both hold."""
    handler = _HANDLERS.get((condition.field, condition.op))
    if handler is None:
        raise QueryError(
            f"{condition.op.upper()} is not supported for {condition.field}", condition.position
        )
    return handler(filters, condition)


def _same(current: str | None, wanted: str) -> bool:
    return current is None or current == wanted


def _to_email(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value = condition.values[0]
    if condition.op == "like":
        value = _domain_pattern(value, condition.position)
    if "@" not in value:
        raise QueryError("to_email must be an address", condition.position)
    if filters.recipient is not None and filters.recipient.lower() != value.lower():
        return None
    return replace(filters, recipient=value)


def _domain_pattern(pattern: str, position: int) -> str:
    """`%@domain` (every address at a domain), or a pattern without wildcards."""
    if pattern.startswith("%@") and not any(c in pattern[2:] for c in "%_"):
        return pattern[1:]
    if not any(c in pattern for c in "%_"):
        return pattern
    raise QueryError('to_email LIKE takes "%@domain" or an address', position)


def _from_email(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value = condition.values[0]
    if filters.sender is not None and filters.sender.lower() != value.lower():
        return None
    return replace(filters, sender=value)


def _subject(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value, equals = condition.values[0], condition.op == "="
    if condition.op == "like":
        value, equals = _prefix_pattern(value, condition.position)
    if not value:
        return filters
    if filters.subject is not None:
        raise QueryError("one subject condition per AND group", condition.position)
    return replace(filters, subject=value, subject_equals=equals)


def _prefix_pattern(pattern: str, position: int) -> tuple[str, bool]:
    """A LIKE pattern as (prefix, whole): "abc%" is a prefix, "abc" the whole subject."""
    body, wildcard = (pattern[:-1], True) if pattern.endswith("%") else (pattern, False)
    if any(c in body for c in "%_"):
        raise QueryError('subject LIKE takes a prefix: "text%"', position)
    return body, not wildcard


def _status(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    wanted: set[RecipientStatus] = set()
    for value in condition.values:
        statuses = SENDGRID_STATUSES.get(value.lower())
        if statuses is None:
            try:
                statuses = (RecipientStatus(value.lower()),)
            except ValueError:
                known = ", ".join([*SENDGRID_STATUSES, *RecipientStatus])
                raise QueryError(
                    f"unknown status {value!r} ({known})", condition.position
                ) from None
        wanted.update(statuses)
    if filters.statuses:
        wanted &= set(filters.statuses)
        if not wanted:
            return None
    return replace(filters, statuses=tuple(sorted(wanted)))


def _msg_id(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value = condition.values[0]
    message_id, _, recipient_id = value.partition(".")
    if not _same(filters.message_id, message_id.upper()):
        return None
    narrowed = replace(filters, message_id=message_id.upper())
    if recipient_id:
        if not _same(filters.recipient_id, recipient_id.upper()):
            return None
        narrowed = replace(narrowed, recipient_id=recipient_id.upper())
    return narrowed


def _category(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value = condition.values[0]
    if filters.category is not None and filters.category != value:
        raise QueryError("one categories condition per AND group", condition.position)
    return replace(filters, category=value)


def _template(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    value = condition.values[0]
    return replace(filters, template_id=value) if _same(filters.template_id, value) else None


def _unique_arg(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    assert condition.key is not None  # the parser always reads unique_args' key
    pair = (condition.key, condition.values[0])
    return replace(filters, metadata=tuple(dict.fromkeys((*filters.metadata, pair))))


def _time(filters: SearchFilters, condition: Condition) -> SearchFilters | None:
    moments = [_moment(value, condition.position) for value in condition.values]
    start, end = filters.start, filters.end
    match condition.op:
        case "between":  # inclusive at both ends, as SQL's BETWEEN
            start, end = _later(start, moments[0]), _earlier(end, moments[1] + _TICK)
        case ">=":
            start = _later(start, moments[0])
        case ">":
            start = _later(start, moments[0] + _TICK)
        case "<=":
            end = _earlier(end, moments[0] + _TICK)
        case "<":
            end = _earlier(end, moments[0])
        case _:  # "=": that very moment
            start, end = _later(start, moments[0]), _earlier(end, moments[0] + _TICK)
    if start is not None and end is not None and start >= end:
        return None
    return replace(filters, start=start, end=end)


_TICK = timedelta(microseconds=1)


def _later(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None else max(current, moment)


def _earlier(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None else min(current, moment)


def _moment(value: str, position: int) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise QueryError(f"{value!r} is not an ISO 8601 time", position) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_Handler = Callable[[SearchFilters, Condition], SearchFilters | None]
_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("to_email", "="): _to_email,
    ("to_email", "like"): _to_email,
    ("from_email", "="): _from_email,
    ("subject", "="): _subject,
    ("subject", "like"): _subject,
    ("status", "="): _status,
    ("status", "in"): _status,
    ("msg_id", "="): _msg_id,
    ("categories", "="): _category,
    ("categories", "contains"): _category,
    ("template_id", "="): _template,
    ("unique_args", "="): _unique_arg,
    **{("last_event_time", op): _time for op in ("=", "<", "<=", ">", ">=", "between")},
}
