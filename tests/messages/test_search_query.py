"""SendGrid's Email Activity query language: parsing, errors with their position, and the
filters each query becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.messages.activity_query import (
    Both,
    Condition,
    Either,
    Node,
    QueryError,
    parse,
    to_filters,
)
from app.messages.models import RecipientStatus
from app.messages.search import SearchFilters

# --- round trip: a rendered tree parses back to itself ---------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_time = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.isoformat())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    """A random condition the grammar allows."""
    kind = draw(st.sampled_from(["eq", "like", "in", "between", "compare", "contains", "arg"]))
    field = draw(st.sampled_from(["to_email", "from_email", "subject", "status", "msg_id"]))
    match kind:
        case "eq":
            return Condition(field, "=", (draw(_text),), 0)
        case "like":
            return Condition(field, "like", (draw(_text),), 0)
        case "in":
            return Condition(field, "in", tuple(draw(st.lists(_text, min_size=1, max_size=3))), 0)
        case "between":
            return Condition("last_event_time", "between", (draw(_time), draw(_time)), 0)
        case "compare":
            op = draw(st.sampled_from(["<", "<=", ">", ">="]))
            return Condition("last_event_time", op, (draw(_time),), 0)
        case "contains":
            return Condition("categories", "contains", (draw(_text),), 0)
        case _:
            return Condition("unique_args", "=", (draw(_text),), 0, key=draw(_text))


trees = st.recursive(
    conditions(),
    lambda inner: st.builds(Both, inner, inner) | st.builds(Either, inner, inner),
    max_leaves=6,
)


def render(node: Node) -> str:
    """The query text of a tree, every operand parenthesised."""
    if isinstance(node, Both):
        return f"({render(node.left)}) AND ({render(node.right)})"
    if isinstance(node, Either):
        return f"({render(node.left)}) or ({render(node.right)})"
    field = node.field if node.key is None else f"unique_args[{_quote(node.key)}]"
    values = [_quote(value) for value in node.values]
    match node.op:
        case "in":
            return f"{field} IN ({', '.join(values)})"
        case "between":
            return f"{field} between TIMESTAMP {values[0]} AND TIMESTAMP {values[1]}"
        case "like":
            return f"{field} LIKE {values[0]}"
        case "contains":
            return f"Contains({field},{values[0]})"
        case op if node.field == "last_event_time":
            return f"{field} {op} TIMESTAMP {values[0]}"
        case op:
            return f"{field}{op}{values[0]}"


def _without_positions(node: Node) -> Node:
    if isinstance(node, Both | Either):
        return type(node)(_without_positions(node.left), _without_positions(node.right))
    return Condition(node.field, node.op, node.values, 0, node.key)


@given(trees)
def test_a_rendered_query_parses_back_to_its_tree(tree: Node) -> None:
    assert _without_positions(parse(render(tree))) == tree


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_a_position_inside_it(text: str) -> None:
    try:
        to_filters(text)
    except QueryError as error:
        failure: QueryError | None = error
    else:
        failure = None
    if failure is not None:
        assert 0 <= failure.position <= len(text)
        assert f"at position {failure.position}" in str(failure)


@given(trees, st.data())
def test_a_stray_character_is_reported_where_it_is(tree: Node, data: st.DataObject) -> None:
    query = render(tree)
    # Between two tokens: before a field name, an operator or a parenthesis, never in a string.
    gaps = [i for i, c in enumerate(query) if c == " " and query.count('"', 0, i) % 2 == 0]
    if not gaps:
        return
    at = data.draw(st.sampled_from(gaps))
    with pytest.raises(QueryError) as raised:
        parse(query[:at] + ";" + query[at:])
    assert raised.value.position == at


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "position", "words"),
    [
        ("", 0, "empty"),
        ('to_email="a@x.test" AND', 23, "field name"),
        ('to_email="a@x.test" to_email="b@x.test"', 20, "AND, OR"),
        ('foo="x"', 0, "unknown field"),
        ('to_email "a@x.test"', 9, "operator"),
        ('to_email!="a@x.test"', 8, "negations"),
        ('NOT to_email="a@x.test"', 0, "NOT"),
        ('(status="delivered"', 19, "')'"),
        ('status="delivered" ; drop', 19, "';'"),
        ('subject LIKE "%sale%"', 0, "prefix"),
        ('to_email LIKE "ann%"', 0, "%@domain"),
        ('last_event_time > TIMESTAMP "yesterday"', 0, "ISO 8601"),
        ('last_event_time BETWEEN "2026-01-01" AND "2026-01-02"', 24, "TIMESTAMP"),
        ('status="lost"', 0, "unknown status"),
        ('to_email="nobody"', 0, "address"),
        ('template_id LIKE "d-%"', 0, "LIKE is not supported for template_id"),
        ('Contains(categories,"a") AND Contains(categories,"b")', 29, "one categories"),
        ('to_email="x@y.z', 9, "unexpected character"),
    ],
)
def test_errors_name_what_is_wrong_and_where(query: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as raised:
        to_filters(query)
    assert raised.value.position == position
    assert words in str(raised.value)


def test_too_many_alternatives_are_refused() -> None:
    many = " AND ".join(f'msg_id IN ("a{i}", "b{i}")' for i in range(6))  # 2**6 = 64 groups
    with pytest.raises(QueryError, match="alternatives"):
        to_filters(many)


# --- what queries mean -------------------------------------------------------------------------


def test_common_queries_become_filters() -> None:
    [to] = to_filters('to_email="Ann@X.test"')
    assert to == SearchFilters(recipient="Ann@X.test")
    [domain] = to_filters('to_email LIKE "%@x.test"')
    assert domain.recipient == "@x.test"
    [subject] = to_filters('subject="Your order"')
    assert (subject.subject, subject.subject_equals) == ("Your order", True)
    [prefix] = to_filters("subject LIKE 'Your order%'")
    assert (prefix.subject, prefix.subject_equals) == ("Your order", False)
    [category] = to_filters('(Contains(categories,"receipts"))')
    assert category.category == "receipts"
    [arg] = to_filters("unique_args['order']=\"42\" AND unique_args['shop']=\"eu\"")
    assert arg.metadata == (("order", "42"), ("shop", "eu"))
    [message] = to_filters('msg_id="01abc.01def"')
    assert (message.message_id, message.recipient_id) == ("01ABC", "01DEF")
    [plain] = to_filters('last_event_time="2017-11-07T23:13:58Z"')  # SendGrid's example
    assert plain.start == datetime(2017, 11, 7, 23, 13, 58, tzinfo=UTC)
    [curly] = to_filters("from_email=“billing@x.test”")  # SendGrid's own examples' quotes
    assert curly.sender == "billing@x.test"


def test_statuses_map_sendgrids_names_to_ours() -> None:
    [not_delivered] = to_filters('status="not_delivered"')
    assert set(not_delivered.statuses) == {"bounced", "dropped", "expired", "cancelled"}
    [both] = to_filters('status IN ("delivered", "bounced")')
    assert set(both.statuses) == {RecipientStatus.DELIVERED, RecipientStatus.BOUNCED}
    [narrowed] = to_filters('status="not_delivered" AND status IN ("bounced", "delivered")')
    assert narrowed.statuses == (RecipientStatus.BOUNCED,)
    assert to_filters('status="delivered" AND status="bounced"') == []


def test_or_and_in_expand_to_alternatives() -> None:
    groups = to_filters('(to_email="a@x.test" OR to_email="b@x.test") AND status="delivered"')
    assert [g.recipient for g in groups] == ["a@x.test", "b@x.test"]
    assert all(g.statuses == (RecipientStatus.DELIVERED,) for g in groups)
    ids = to_filters('msg_id IN ("A", "B", "C")')
    assert [g.message_id for g in ids] == ["A", "B", "C"]
    # AND binds tighter than OR.
    loose = to_filters('to_email="a@x.test" OR to_email="b@x.test" AND status="delivered"')
    assert [(g.recipient, g.statuses) for g in loose] == [
        ("a@x.test", ()),
        ("b@x.test", (RecipientStatus.DELIVERED,)),
    ]


def test_contradictions_match_nothing() -> None:
    assert to_filters('to_email="a@x.test" AND to_email="b@x.test"') == []
    assert to_filters('template_id="a" AND template_id="b"') == []


def test_time_conditions_bound_the_acceptance_time() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    query = (
        'last_event_time BETWEEN TIMESTAMP "2026-01-01T00:00:00Z" '
        'AND TIMESTAMP "2026-01-02T00:00:00Z"'
    )
    [between] = to_filters(query)
    assert (between.start, between.end) == (start, end + timedelta(microseconds=1))
    [after] = to_filters('last_event_time > TIMESTAMP "2026-01-01T00:00:00"')  # UTC if no offset
    assert after.start == start + timedelta(microseconds=1)
    [before] = to_filters('last_event_time < TIMESTAMP "2026-01-02T01:00:00+01:00"')
    assert before.end == end
    empty = 'last_event_time < TIMESTAMP "2026-01-01T00:00:00Z" AND last_event_time >= ' + (
        'TIMESTAMP "2026-01-02T00:00:00Z"'
    )
    assert to_filters(empty) == []
