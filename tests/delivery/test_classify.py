"""Bounce classification against a corpus of real replies (RFC 3463, RFC 5321 §4.2)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.delivery.classify import (
    RULES,
    BounceKind,
    Bucket,
    Classification,
    Rule,
    classify,
    suppresses,
)
from app.delivery.replies import Reply, synthetic


class CorpusEntry(TypedDict):
    """One reply as a receiver sent it, with the verdict we expect."""

    provider: str
    code: int
    text: str
    expected_kind: str
    expected_bucket: str
    source: str


CORPUS: list[CorpusEntry] = json.loads(
    (Path(__file__).parent / "fixtures" / "smtp_replies.json").read_text(encoding="utf-8")
)


def verdict(code: int, text: str) -> tuple[str, str]:
    """Kind and bucket of a reply as the SMTP client would report it."""
    classification = classify(Reply.parse(code, text))
    return classification.kind, classification.bucket


@pytest.mark.parametrize(
    "entry", CORPUS, ids=[f"{i:03d}-{e['provider']}-{e['code']}" for i, e in enumerate(CORPUS)]
)
def test_corpus_reply_is_classified_as_expected(entry: CorpusEntry) -> None:
    classification = classify(Reply.parse(entry["code"], entry["text"]))
    expected = (entry["expected_kind"], entry["expected_bucket"])
    assert (classification.kind, classification.bucket) == expected, classification.rule


def test_corpus_is_large_and_covers_the_major_receivers() -> None:
    providers = Counter(entry["provider"] for entry in CORPUS)
    assert len(CORPUS) >= 60
    for provider in ("Gmail", "Outlook", "Yahoo", "Apple", "Postfix", "Exim"):
        assert providers[provider] >= 8, provider


def test_corpus_entries_are_well_formed_and_unique() -> None:
    for entry in CORPUS:
        assert entry["source"].strip()
        assert 400 <= entry["code"] < 600
        assert entry["expected_kind"] in set(BounceKind)
        assert entry["expected_bucket"] in set(Bucket)
    assert len({(e["code"], e["text"]) for e in CORPUS}) == len(CORPUS)


def test_corpus_exercises_every_kind_and_bucket() -> None:
    assert {e["expected_kind"] for e in CORPUS} == set(BounceKind)
    assert {e["expected_bucket"] for e in CORPUS} == set(Bucket)


# Replies our own engine makes up (app/delivery/mx.py, smtp.py, retry.py), replies that only the
# enhanced or basic code can classify, and wordings known only from provider documentation.
KNOWN_REPLIES: list[tuple[Reply, BounceKind, Bucket]] = [
    (
        synthetic(550, "5.1.2", "domain x.test does not exist (NXDOMAIN)"),
        BounceKind.HARD,
        Bucket.INVALID_ADDRESS,
    ),
    (
        synthetic(556, "5.1.10", "domain x.test accepts no mail (null MX)"),
        BounceKind.HARD,
        Bucket.INVALID_ADDRESS,
    ),
    (
        synthetic(451, "4.4.3", "DNS lookup for x.test failed temporarily (timeout)"),
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    ),
    (
        synthetic(451, "4.4.4", "no address found for the mail hosts of x.test"),
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    ),
    (
        synthetic(550, "5.4.4", "the mail hosts of x.test have only non-public addresses"),
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    ),
    (
        synthetic(552, "5.3.4", "message size exceeds the server's limit of 1000"),
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    ),
    (synthetic(553, "5.6.7", "no mail host supports SMTPUTF8"), BounceKind.SOFT, Bucket.TECHNICAL),
    (synthetic(451, "4.4.2", "connection lost at DATA (reset)"), BounceKind.SOFT, Bucket.TECHNICAL),
    (synthetic(452, "4.5.3", "too many recipients"), BounceKind.SOFT, Bucket.FREQUENCY),
    # An expiry names the last reply, which tells why (RFC 5321 §4.5.4.1, 4.4.7).
    (
        synthetic(
            421,
            "4.4.7",
            "message expired after 5 days, 0:00:00; last reply: 421 4.7.0 "
            "[TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume "
            "or user complaints",
        ),
        BounceKind.BLOCK,
        Bucket.REPUTATION,
    ),
    (
        synthetic(
            450,
            "4.4.7",
            "message expired after 5 days, 0:00:00; last reply: 450 4.1.1 "
            "<a@x.test>: Recipient address rejected: User unknown",
        ),
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
    ),
    (
        synthetic(
            451,
            "4.4.7",
            "message expired after 5 days, 0:00:00; last reply: 451 4.4.1 "
            "cannot talk to mx.x.test [192.0.2.1]",
        ),
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    ),
    # RFC 3463 fallbacks: the enhanced code alone decides.
    (Reply(550, "Requested action not taken", "5.1.1"), BounceKind.HARD, Bucket.INVALID_ADDRESS),
    (Reply(550, "Requested action not taken", "5.1.6"), BounceKind.HARD, Bucket.INVALID_ADDRESS),
    (Reply(553, "Requested action not taken", "5.1.7"), BounceKind.BLOCK, Bucket.TECHNICAL),
    (
        Reply(552, "Requested action not taken", "5.2.2"),
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
    ),
    (
        Reply(550, "Requested action not taken", "5.2.1"),
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
    ),
    (Reply(552, "Requested action not taken", "5.2.3"), BounceKind.SOFT, Bucket.TECHNICAL),
    (Reply(452, "Requested action not taken", "4.5.3"), BounceKind.SOFT, Bucket.FREQUENCY),
    (Reply(550, "Requested action not taken", "5.7.1"), BounceKind.BLOCK, Bucket.REPUTATION),
    (Reply(451, "Requested action not taken", "4.7.1"), BounceKind.SOFT, Bucket.REPUTATION),
    (Reply(550, "Requested action not taken", "5.7.23"), BounceKind.BLOCK, Bucket.TECHNICAL),
    (Reply(530, "Requested action not taken", "5.7.10"), BounceKind.BLOCK, Bucket.TECHNICAL),
    (Reply(554, "Requested action not taken", "5.6.0"), BounceKind.SOFT, Bucket.TECHNICAL),
    # RFC 5321 §4.2.3 fallbacks: only the basic code.
    (Reply(421, "closing channel"), BounceKind.SOFT, Bucket.TECHNICAL),
    (Reply(450, "Requested mail action not taken"), BounceKind.SOFT, Bucket.MAILBOX_UNAVAILABLE),
    (Reply(451, "Requested action aborted"), BounceKind.SOFT, Bucket.TECHNICAL),
    (Reply(552, "Requested mail action aborted"), BounceKind.SOFT, Bucket.MAILBOX_UNAVAILABLE),
    (Reply(454, "nope"), BounceKind.SOFT, Bucket.UNCLASSIFIED),
    (Reply(550, "nope"), BounceKind.UNKNOWN, Bucket.UNCLASSIFIED),
    # Gmail's newer 4.7.28 wording (sisimai rhost/for-google.go): rate, not reputation or DKIM.
    (
        Reply.parse(
            421,
            "4.7.28 Gmail has detected an unusual rate of mail originating from your "
            "DKIM domain [example.com 12]. To protect our users from spam, mail sent from "
            "your DKIM domain has been temporarily rate limited.",
        ),
        BounceKind.BLOCK,
        Bucket.FREQUENCY,
    ),
]


@pytest.mark.parametrize(("reply", "kind", "bucket"), KNOWN_REPLIES, ids=str)
def test_known_reply_is_classified_as_expected(reply: Reply, kind: str, bucket: str) -> None:
    classification = classify(reply)
    assert (classification.kind, classification.bucket) == (kind, bucket), classification.rule


def test_every_rule_is_reached_by_some_reply() -> None:
    replies = [Reply.parse(e["code"], e["text"]) for e in CORPUS]
    replies += [reply for reply, _, _ in KNOWN_REPLIES]
    used = {classify(reply).rule for reply in replies}
    assert [rule.name for rule in RULES if rule.name not in used] == []


def test_rule_table_is_well_formed() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    catch_all = RULES[-1]
    assert (catch_all.text, catch_all.enhanced, catch_all.codes) == (None, (), ())
    assert catch_all.kind is BounceKind.UNKNOWN


# --- Rule order: text before codes, where receivers misuse codes ----------------------------


def test_gmail_receiving_rate_under_5_7_1_is_frequency_not_reputation() -> None:
    text = (
        "5.7.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered. Please resend your message at a later time."
    )
    assert verdict(550, text) == (BounceKind.SOFT, Bucket.FREQUENCY)


def test_outlook_block_list_under_5_7_1_is_reputation() -> None:
    text = (
        "5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150)."
    )
    assert verdict(550, text) == (BounceKind.BLOCK, Bucket.REPUTATION)


def test_mailbox_full_under_a_5xx_is_soft() -> None:
    assert verdict(552, "5.2.2 mailbox full") == (BounceKind.SOFT, Bucket.MAILBOX_UNAVAILABLE)


def test_yahoo_reply_without_enhanced_code_is_hard() -> None:
    text = "delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0]"
    assert verdict(554, text) == (BounceKind.HARD, Bucket.INVALID_ADDRESS)


def test_user_unknown_with_5_1_1_is_hard() -> None:
    assert verdict(550, "5.1.1 <a@x.test>... User unknown") == (
        BounceKind.HARD,
        Bucket.INVALID_ADDRESS,
    )


def test_text_beats_the_mailbox_full_code_when_the_address_does_not_exist() -> None:
    text = "5.2.2 <a@x.test>: Recipient address rejected: Address does not exist"
    assert verdict(552, text) == (BounceKind.HARD, Bucket.INVALID_ADDRESS)


def test_text_beats_the_bad_mailbox_code_when_the_mailbox_is_full() -> None:
    text = "5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]"
    assert verdict(552, text) == (BounceKind.SOFT, Bucket.MAILBOX_UNAVAILABLE)


def test_ambiguous_unknown_or_full_reply_does_not_suppress() -> None:
    assert verdict(551, "<a@x.test>: user unknown or mailbox full") == (
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
    )


def test_exim_sender_verification_quoting_user_unknown_is_about_our_sender() -> None:
    text = (
        "Verification failed for <bounces@x.test>\nCalled: 192.0.2.1\n"
        "Sent: RCPT TO:<bounces@x.test>\nResponse: 550 5.1.1 User unknown\nSender verify failed"
    )
    classification = classify(Reply.parse(550, text))
    assert (classification.kind, classification.bucket) == (BounceKind.BLOCK, Bucket.TECHNICAL)
    assert not suppresses(classification)


def test_rate_limit_for_failed_authentication_is_technical_not_frequency() -> None:
    text = (
        "4.7.27 Your email has been rate limited because SPF authentication didn't pass for this "
        "message. Gmail requires all bulk email senders to authenticate their email with SPF."
    )
    assert verdict(421, text) == (BounceKind.BLOCK, Bucket.TECHNICAL)


def test_rate_limit_because_of_reputation_is_reputation() -> None:
    text = (
        "4.7.650 The mail server [192.0.2.5] has been temporarily rate limited due to IP reputation"
    )
    assert verdict(451, text) == (BounceKind.BLOCK, Bucket.REPUTATION)


def test_plain_sender_rate_limit_is_frequency() -> None:
    text = "4.7.28 Gmail has detected an unusual rate of mail originating from your DKIM domain."
    assert verdict(421, text) == (BounceKind.BLOCK, Bucket.FREQUENCY)


def test_size_reply_mentioning_attachments_is_technical_not_content() -> None:
    text = "5.3.4 Your message exceeded Google's message size limits. See Send attachments."
    assert verdict(552, text) == (BounceKind.SOFT, Bucket.TECHNICAL)


def test_access_denied_is_unknown_recipient_only_with_microsofts_5_4_1() -> None:
    text = "Recipient address rejected: Access denied"
    assert verdict(550, f"5.4.1 {text}. AS(201806281)") == (
        BounceKind.HARD,
        Bucket.INVALID_ADDRESS,
    )
    assert verdict(554, f"5.7.1 <a@x.test>: {text}") == (BounceKind.BLOCK, Bucket.REPUTATION)


def test_relay_denied_is_a_misrouted_domain_not_a_policy_block() -> None:
    assert verdict(554, "5.7.1 <a@x.test>: Relay access denied") == (
        BounceKind.SOFT,
        Bucket.TECHNICAL,
    )


def test_embedded_enhanced_code_is_used_when_none_leads() -> None:
    assert verdict(550, "Invalid recipient <a@x.test> (#5.1.1)") == (
        BounceKind.HARD,
        Bucket.INVALID_ADDRESS,
    )
    # A dotted quad is not an enhanced code.
    assert verdict(550, "mail from 5.7.1.9 refused by peer") == (
        BounceKind.BLOCK,
        Bucket.REPUTATION,
    )
    assert verdict(550, "rejected, host 4.2.2.7 said so") == (
        BounceKind.UNKNOWN,
        Bucket.UNCLASSIFIED,
    )


# --- The guards and suppression --------------------------------------------------------------


def test_transient_unknown_user_is_soft_and_mailbox_unavailable() -> None:
    text = "4.1.1 <a@x.test>: Recipient address rejected: User unknown in local recipient table"
    classification = classify(Reply.parse(450, text))
    assert (classification.kind, classification.bucket) == (
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
    )
    assert classification.rule == "mailbox-does-not-exist"
    assert not suppresses(classification)


def test_policy_status_that_reads_like_an_unknown_user_does_not_suppress() -> None:
    classification = classify(Reply.parse(550, "5.7.1 No such user!"))
    assert (classification.kind, classification.bucket) == (
        BounceKind.BLOCK,
        Bucket.INVALID_ADDRESS,
    )
    assert not suppresses(classification)


POLICY_DETAIL = st.integers(min_value=0, max_value=999)
ANY_CORPUS_TEXT = st.sampled_from([entry["text"] for entry in CORPUS])


@given(code=st.integers(min_value=500, max_value=599), detail=POLICY_DETAIL, text=ANY_CORPUS_TEXT)
def test_a_5_7_x_reply_never_suppresses(code: int, detail: int, text: str) -> None:
    reply = Reply.parse(code, f"5.7.{detail} {text}")
    assert not suppresses(classify(reply))


@given(code=st.integers(min_value=400, max_value=499), text=ANY_CORPUS_TEXT)
def test_a_transient_reply_never_suppresses(code: int, text: str) -> None:
    assert not suppresses(classify(Reply.parse(code, text)))


def test_every_hard_corpus_reply_suppresses_and_no_other_does() -> None:
    for entry in CORPUS:
        classification = classify(Reply.parse(entry["code"], entry["text"]))
        assert suppresses(classification) is (entry["expected_kind"] == "hard"), entry["text"]


@pytest.mark.parametrize("kind", list(BounceKind))
def test_suppresses_exactly_the_hard_kind(kind: BounceKind) -> None:
    classification = Classification(kind, Bucket.INVALID_ADDRESS, "any")
    assert suppresses(classification) is (kind is BounceKind.HARD)


# --- API --------------------------------------------------------------------------------------


def test_a_success_reply_is_not_a_failure() -> None:
    with pytest.raises(ValueError, match="2xx"):
        classify(Reply.parse(250, "2.0.0 OK"))


def test_buckets_are_spelled_as_sendgrid_spells_them() -> None:
    assert [str(bucket) for bucket in Bucket] == [
        "Invalid Address",
        "Mailbox Unavailable",
        "Reputation",
        "Content",
        "Frequency or Volume Too High",
        "Technical Failure",
        "Unclassified",
    ]


def test_the_table_can_be_extended() -> None:
    local = Rule(
        "local-vacation",
        BounceKind.SOFT,
        Bucket.MAILBOX_UNAVAILABLE,
        text=r"on vacation",
        codes=("5",),
    )
    reply = Reply.parse(550, "5.1.1 user unknown (on vacation)")
    assert classify(reply, rules=(local, *RULES)).rule == "local-vacation"
    assert classify(reply).rule == "mailbox-does-not-exist"


def test_a_table_without_catch_all_reports_unclassified() -> None:
    classification = classify(Reply.parse(550, "whatever"), rules=())
    assert classification == Classification(BounceKind.UNKNOWN, Bucket.UNCLASSIFIED, "unclassified")
