"""Reading returned mail (app.bounces.intake): the corpus of real bounces, the standard
report shapes, auto-replies and confirmations; nothing ever raises, whatever is cut off."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from app.bounces.intake import Outcome, Reading, read_message
from app.bounces.reports import RecipientStatus
from app.delivery.classify import classify

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"

# Every message of the corpus (fixtures/README.md): what it is, the bounce kinds of its
# failures (app.delivery.classify), and the recipients it names. The failed and delayed
# addresses agree with flufl.bounce's own expectations for the same files.
EXPECTED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "aol_01": ("bounce", ("unknown",), ("screenname@aol.com",)),
    "bounce_01": ("unclassified", (), ()),
    "bounce_02": ("bounce", ("hard",), ("userx@example.com",)),
    "bounce_03": ("bounce", ("unknown",), ("userx@example.uk",)),
    "caiwireless_01": ("bounce", ("unknown",), ("userx@example.com",)),
    "dsn_01": ("bounce", ("soft",), ("userx@example.com",)),
    "dsn_02": ("bounce", ("soft",), ("zzzzz@example.uk",)),
    "dsn_03": ("bounce", ("unknown",), ("userx@example.be",)),
    "dsn_04": ("bounce", ("unknown",), ("userx@example.ch",)),
    "dsn_05": ("delay", (), ("userx@example.cz",)),
    "dsn_06": ("delay", (), ("userx@example.com",)),
    "dsn_07": ("delay", (), ("userx@example.nz",)),
    "dsn_08": ("delay", (), ("userx@example.de",)),
    "dsn_09": ("bounce", ("unknown",), ("userx@example.com",)),
    "dsn_10": ("bounce", ("hard",), ("anne.person@dom.ain",)),
    "dsn_11": ("bounce", ("hard",), ("joem@example.com",)),
    "dsn_12": ("bounce", ("hard",), ("userx@example.jp",)),
    "dsn_13": ("bounce", ("hard",), ("userx@example.com",)),
    "dsn_14": ("bounce", ("hard",), ("userx@example.com.dk",)),
    "dsn_15": ("bounce", ("unknown",), ("userx@example.com",)),
    "dsn_16": ("bounce", ("hard",), ("userx@example.com",)),
    "dsn_17": ("delay", (), ("userx@example.fi",)),
    "dsn_18": ("bounce", ("unknown",), ("email@replaced.net",)),
    "dumbass_01": ("unclassified", (), ()),
    "exim_01": ("bounce", ("hard",), ("userx@its.example.nl",)),
    "groupwise_01": ("bounce", ("unknown",), ("userx@example.edu",)),
    "groupwise_02": ("bounce", ("hard",), ("userx@example.com",)),
    "groupwise_03": ("unclassified", (), ()),
    "hotpop_01": ("bounce", ("soft",), ("userx@example.com",)),
    "llnl_01": ("bounce", ("unknown",), ("user1@example.gov",)),
    "microsoft_01": ("bounce", ("unknown",), ("userx@example.com",)),
    "microsoft_02": ("bounce", ("hard",), ("userx@example.com",)),
    "microsoft_03": ("bounce", ("unknown",), ("userx@example.com",)),
    "microsoft_04": ("bounce", ("unknown",), ("userx@example.com",)),
    "netscape_01": ("bounce", ("unknown",), ("aaaaa@corel.com", "bbbbb@corel.com")),
    "newmailru_01": ("bounce", ("soft",), ("zzzzz@newmail.ru",)),
    "postfix_01": ("bounce", ("hard",), ("xxxxx@local.ie",)),
    "postfix_02": ("bounce", ("unknown",), ("yyyyy@digicool.com",)),
    "postfix_03": ("bounce", ("unknown",), ("ttttt@ggggg.com",)),
    "postfix_04": ("bounce", ("soft",), ("userx@mail1.example.com",)),
    "postfix_05": ("bounce", ("unknown",), ("userx@example.net",)),
    "qmail_01": ("bounce", ("unknown",), ("userx@example.de",)),
    "qmail_02": ("bounce", ("unknown",), ("userx@example.com",)),
    "qmail_03": ("bounce", ("hard",), ("userx@example.jp",)),
    "qmail_04": ("bounce", ("hard",), ("userx@example.au",)),
    "qmail_05": ("bounce", ("hard",), ("userx@example.com",)),
    "qmail_06": ("bounce", ("soft",), ("ntl@xxx.com",)),
    "qmail_07": ("bounce", ("unknown",), ("user@example.net",)),
    "qmail_08": ("auto_reply", (), ()),
    "sendmail_01": ("bounce", ("unknown",), ("zzzzz@nfg.nl", "zzzzz@shaft.coal.nl")),
    "simple_01": ("bounce", ("unknown",), ("bbbsss@example.com",)),
    "simple_02": ("bounce", ("unknown",), ("userx@example.net",)),
    "simple_03": ("delay", (), ("userx@example.za",)),
    "simple_04": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_05": ("bounce", ("hard",), ("userx@example.net",)),
    "simple_06": ("bounce", ("hard",), ("userx@example.com",)),
    "simple_07": ("bounce", ("soft",), ("userx@example.net",)),
    "simple_08": ("bounce", ("hard",), ("userx@example.de",)),
    "simple_09": ("bounce", ("soft",), ("userx@example.de",)),
    "simple_10": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_11": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_12": ("bounce", ("unknown",), ("userx@example.ac.jp",)),
    "simple_13": ("bounce", ("unknown",), ("userx@example.fr",)),
    "simple_14": ("bounce", ("soft",), ("userx@example.com", "usery@example.com")),
    "simple_15": ("bounce", ("hard",), ("userx@example.be",)),
    "simple_16": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_17": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_18": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_19": ("bounce", ("hard",), ("userx@example.com.ar",)),
    "simple_20": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_21": ("delay", (), ("userx@example.com",)),
    "simple_22": ("delay", (), ("user@example.org",)),
    "simple_23": ("bounce", ("unknown",), ("userx@example.it",)),
    "simple_24": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_25": ("bounce", ("hard",), ("userx@example.com",)),
    "simple_26": ("bounce", ("unknown",), ("userx@example.it",)),
    "simple_27": ("bounce", ("hard",), ("userx@example.net.py",)),
    "simple_28": ("delay", (), ("userx@example.com",)),
    "simple_29": ("bounce", ("hard",), ("userx@example.com",)),
    "simple_30": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_31": ("bounce", ("unknown",), ("userx@example.fr",)),
    "simple_32": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_33": ("bounce", ("unknown",), ("userx@example.com",)),
    "simple_34": ("bounce", ("hard",), ("roland@example.com",)),
    "simple_35": ("delay", (), ("calvin@example.com",)),
    "simple_36": ("bounce", ("hard",), ("userx@example.com",)),
    "simple_37": ("bounce", ("unknown",), ("user@example.edu",)),
    "simple_38": ("bounce", ("soft",), ("userx@example.com",)),
    "simple_39": ("bounce", ("hard",), ("userx@example.ru",)),
    "simple_40": ("delay", (), ("user@example.com",)),
    "simple_41": ("bounce", ("hard",), ("userx@example.com",)),
    "simple_42": ("bounce", ("block",), ("david...@gmail.com",)),
    "simple_43": ("unclassified", (), ()),
    "simple_44": ("bounce", ("soft",), ("user@example.com",)),
    "simple_45": ("bounce", ("soft",), ("subscriber@earthlink.net",)),
    "sina_01": ("bounce", ("unknown",), ("userx@sina.com", "usery@sina.com")),
    "smtp32_01": ("bounce", ("unknown",), ("userx@example.ph",)),
    "smtp32_02": ("bounce", ("unknown",), ("userx@example.com",)),
    "smtp32_03": ("bounce", ("unknown",), ("userx@example.com",)),
    "smtp32_04": (
        "bounce",
        ("hard",),
        ("after_another@example.net", "one_bad_address@example.net"),
    ),
    "smtp32_05": ("bounce", ("unknown",), ("userx@example.com",)),
    "smtp32_06": ("bounce", ("hard",), ("absolute_garbage_addr@example.net",)),
    "smtp32_07": ("bounce", ("unknown",), ("userx@example.com",)),
    "yahoo_01": ("bounce", ("soft",), ("userx@example.com",)),
    "yahoo_02": ("bounce", ("soft",), ("userx@example.es",)),
    "yahoo_03": ("bounce", ("hard",), ("userx@example.com",)),
    "yahoo_04": ("bounce", ("soft",), ("userx@example.es", "usery@example.uk")),
    "yahoo_05": ("bounce", ("hard",), ("userx@example.com", "usery@example.com")),
    "yahoo_06": (
        "bounce",
        ("hard",),
        ("usera@example.com", "userx@example.com", "usery@example.com", "userz@example.com"),
    ),
    "yahoo_07": (
        "bounce",
        ("hard",),
        ("userw@example.com", "userx@example.com", "usery@example.com", "userz@example.com"),
    ),
    "yahoo_08": (
        "bounce",
        ("hard",),
        (
            "usera@example.com",
            "userb@example.com",
            "userc@example.com",
            "userd@example.com",
            "usere@example.com",
            "userf@example.com",
        ),
    ),
    "yahoo_09": ("bounce", ("hard",), ("userx@example.com", "usery@example.com")),
    "yahoo_10": (
        "bounce",
        ("hard",),
        ("userx@example.com", "usery@example.com", "userz@example.com"),
    ),
    "yahoo_11": ("bounce", ("hard",), ("bad_user@aol.com",)),
    "yahoo_12": ("bounce", ("unknown",), ("user@yahoo.com",)),
    "yahoo_13": ("bounce", ("hard",), ("bogus-address@example.net",)),
    "yale_01": ("bounce", ("unknown",), ("userx@cs.yale.edu", "userx@yale.edu")),
}


def read(name: str) -> Reading:
    """The reading of a corpus message."""
    return read_message((CORPUS / f"{name}.txt").read_bytes())


def render(name: str, **values: str) -> bytes:
    """A fixture with {{VERP}}, {{RCPT}}, … filled in, with CRLF line ends."""
    text = (FIXTURES / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_the_corpus_is_all_there() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_bounce_is_understood(name: str) -> None:
    outcome, kinds, addresses = EXPECTED[name]
    reading = read(name)
    assert reading.outcome == outcome
    assert tuple(sorted({classify(s.reply()).kind.value for s in reading.failures})) == kinds
    named = {s.addresses[0].lower() for s in reading.statuses if s.addresses}
    assert tuple(sorted(named)) == addresses


def test_what_the_corpus_covers() -> None:
    outcomes = Counter(read(name).outcome.value for name in EXPECTED)
    assert outcomes == {"bounce": 101, "delay": 11, "auto_reply": 1, "unclassified": 4}
    kinds = Counter(kind for _, found, _ in EXPECTED.values() for kind in found)
    assert kinds == {"hard": 37, "unknown": 48, "soft": 15, "block": 1}


@pytest.mark.parametrize(
    ("name", "detector"),
    [
        ("dsn_13", "dsn"),  # message/delivery-status inside multipart/mixed
        ("dsn_18", "dsn"),  # OpenSMTPD's own layout, `Action: error`
        ("dsn_12", "dsn"),  # `Action: failed (Bad destination mailbox address)`
        ("dsn_03", "dsn"),  # `Action: failure`
        ("qmail_01", "text"),
        ("exim_01", "text"),  # X-Failed-Recipients
        ("yahoo_08", "text"),  # old Yahoo, six addresses
        ("microsoft_01", "text"),  # Exchange
        ("groupwise_01", "text"),
        ("simple_44", "text"),  # a plain-text notice from 2023
        ("simple_42", "dsn"),  # Gmail via Exim, 2020
    ],
)
def test_format_families_are_recognised(name: str, detector: str) -> None:
    reading = read(name)
    assert reading.detector == detector
    assert reading.outcome is Outcome.BOUNCE


def test_a_status_comment_is_kept_and_classified() -> None:
    [failure] = read("dsn_01").failures
    assert failure.status == "5.0.0"
    assert failure.status_comment == "recipient reached disk quota"
    assert classify(failure.reply()).rule == "mailbox-full"


def test_bounces_marked_auto_submitted_are_still_bounces() -> None:
    # RFC 3834 says auto-replied; these are rejections all the same.
    for name in ("simple_38", "simple_39", "simple_41", "simple_45"):
        assert read(name).outcome is Outcome.BOUNCE, name


def test_a_whitespace_only_line_separates_status_blocks() -> None:
    data = render("whitespace_line_in_status.eml", VERP="v@b.test", RCPT="a@x.test",
                  RCPT2="b@x.test", MESSAGE_ID="<m@x.test>")  # fmt: skip
    reading = read_message(data)
    assert [(s.final_recipient, s.action, s.status) for s in reading.statuses] == [
        ("a@x.test", "failed", "5.1.1"),
        ("b@x.test", "failed", "5.0.0"),
    ]
    assert classify(reading.statuses[1].reply()).rule == "mailbox-full"


def test_a_2xx_diagnostic_takes_its_class_from_the_status() -> None:
    data = render("sendmail_2xx_diagnostics.eml", VERP="v@b.test", RCPT="a@x.test",
                  RCPT2="b@x.test", MESSAGE_ID="<m@x.test>")  # fmt: skip
    reading = read_message(data)
    assert reading.outcome is Outcome.BOUNCE
    [failure] = reading.failures
    reply = failure.reply()
    assert (reply.code, reply.enhanced) == (550, "5.0.0")
    assert classify(reply).kind == "hard"  # "User unknown"; no ValueError for a 2xx code
    delayed = RecipientStatus("b@x.test", None, "failed", "4.2.1", "220 4.2.1 busy", None)
    assert delayed.reply().code == 450


def test_a_global_dsn_keeps_non_ascii_addresses() -> None:
    data = render("postfix_smtputf8_global_dsn.eml", VERP="v@b.test",
                  RCPT="jörg@bücher.example", RCPT_XTEXT="j\\x{F6}rg@b\\x{FC}cher.example",
                  MESSAGE_ID="<m@x.test>")  # fmt: skip
    reading = read_message(data)
    assert reading.detector == "global-dsn"
    [failure] = reading.failures
    assert failure.addresses == ("jörg@bücher.example", "jörg@bücher.example")


def test_a_raw_utf8_boundary_is_read() -> None:
    data = render("postfix_smtputf8_global_dsn.eml", VERP="v@b.test", RCPT="a@x.test",
                  RCPT_XTEXT="a@x.test", MESSAGE_ID="<m@x.test>")  # fmt: skip
    data = data.replace(b"mx.xn--bcher-kva.example", "mx.bücher.example".encode())
    assert read_message(data).outcome is Outcome.BOUNCE


@pytest.mark.parametrize(
    ("fixture", "outcome", "detector"),
    [
        ("exchange_automatic_reply.eml", Outcome.AUTO_REPLY, "vacation"),
        ("gmail_vacation_responder.eml", Outcome.AUTO_REPLY, "auto-replied"),
        ("rfc3834_abwesenheitsnotiz.eml", Outcome.AUTO_REPLY, "vacation"),
        ("boxtrapper_challenge.eml", Outcome.AUTO_REPLY, "challenge-response"),
        ("postfix_delivered_notice.eml", Outcome.DELIVERED, "dsn"),
        ("postfix_delayed.eml", Outcome.DELAY, "dsn"),
        ("exchange_report_without_report_type.eml", Outcome.BOUNCE, "dsn"),
        ("dsn_per_message_fields_only.eml", Outcome.BOUNCE, "dsn-text"),
        ("dsn_recipient_not_named.eml", Outcome.BOUNCE, "dsn"),
        ("hotmail_jmrp_legacy.eml", Outcome.COMPLAINT, "complaint-format"),
        ("rfc6591_auth_failure.eml", Outcome.FEEDBACK, "arf"),
        ("yahoo_arf_complaint.eml", Outcome.COMPLAINT, "arf"),
    ],
)
def test_standard_shapes(fixture: str, outcome: Outcome, detector: str) -> None:
    data = render(fixture, VERP="v@b.test", RCPT="a@x.test", RCPT2="b@x.test",
                  MESSAGE_ID="<m@x.test>")  # fmt: skip
    reading = read_message(data)
    assert (reading.outcome, reading.detector) == (outcome, detector)


@pytest.mark.parametrize(
    ("feedback_type", "outcome"),
    [
        ("abuse", Outcome.COMPLAINT),
        ("fraud", Outcome.COMPLAINT),
        ("virus", Outcome.COMPLAINT),
        ("other", Outcome.COMPLAINT),
        ("not-spam", Outcome.FEEDBACK),
        ("auth-failure", Outcome.FEEDBACK),
    ],
)
def test_every_arf_feedback_type(feedback_type: str, outcome: Outcome) -> None:
    data = render("rfc5965_arf_abuse.eml", VERP="v@b.test", RCPT="a@x.test",
                  MESSAGE_ID="<m@x.test>", FEEDBACK_TYPE=feedback_type)  # fmt: skip
    reading = read_message(data)
    assert reading.outcome is outcome
    assert reading.feedback is not None
    assert reading.feedback.feedback_type == feedback_type
    assert reading.feedback.original_rcpt_to == ("a@x.test",)


def test_an_unsubscribe_needs_a_sender_and_a_person() -> None:
    data = render("mailto_unsubscribe.eml", VERP="v@b.test", RCPT="a@x.test")
    assert read_message(data, envelope_sender="a@x.test").outcome is Outcome.UNSUBSCRIBE
    assert read_message(data, envelope_sender="").outcome is Outcome.UNCLASSIFIED
    automatic = b"Auto-Submitted: auto-generated\r\n" + data
    assert read_message(automatic, envelope_sender="a@x.test").outcome is not Outcome.UNSUBSCRIBE


def _every_message() -> list[tuple[str, bytes]]:
    """Every fixture, the templated ones filled in."""
    found = [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.txt"))]
    for path in sorted(FIXTURES.glob("*.eml")):
        found.append((path.name, render(path.name, VERP="v@b.test", RCPT="a@x.test",
                                        RCPT2="b@x.test", MESSAGE_ID="<m@x.test>")))  # fmt: skip
    return found


def test_messages_cut_short_anywhere_never_break_the_readers() -> None:
    chooser = random.Random(14)
    for name, data in _every_message():
        for cut in [*sorted(chooser.sample(range(len(data)), 12)), 0, 1]:
            reading = read_message(data[:cut])
            assert reading.detector != "error", (name, cut, reading.reason)


def test_nothing_is_a_bounce_without_a_failure() -> None:
    for name, data in _every_message():
        reading = read_message(data)
        if reading.outcome is Outcome.BOUNCE:
            assert reading.failures, name
        else:
            assert not reading.failures, name


def test_a_failure_in_a_single_block_naming_no_one_is_kept() -> None:
    # Some MTAs write one block: the per-message fields and the action together, no address.
    data = (
        b"From: MAILER-DAEMON@mx.example.test\r\nTo: v@b.test\r\nSubject: failure\r\n"
        b'Content-Type: multipart/report; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--b--\r\n"
    )
    reading = read_message(data)
    [failure] = reading.failures
    assert (failure.addresses, failure.status) == ((), "5.1.1")
    assert reading.reporting_mta == "mx.example.test"
