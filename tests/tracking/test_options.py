"""Which tracking a message gets: its own settings over the account's (app.tracking.options)."""

from __future__ import annotations

from app.tracking.defaults import SNAPSHOT_KEY
from app.tracking.options import (
    DEFAULT_SUBSCRIPTION_HTML,
    DEFAULT_SUBSCRIPTION_TEXT,
    NONE,
    Subscription,
    resolve,
)

ACCOUNT = {
    "click_tracking": {"enable": True, "enable_text": True},
    "open_tracking": {"enable": True},
    "subscription_tracking": {"enable": False, "text": "", "html": "", "substitution_tag": ""},
    "ganalytics": {"enable": True, "utm_source": "acct", "utm_medium": ""},
    "list_unsubscribe": False,
}


def test_nothing_stored_is_no_tracking() -> None:
    assert resolve({}, asm_group_id=None) == NONE
    assert resolve(None, asm_group_id=None) == NONE


def test_account_defaults_apply_and_a_send_overrides_them_field_by_field() -> None:
    account = resolve({SNAPSHOT_KEY: ACCOUNT}, asm_group_id=None)
    assert (account.click, account.click_text, account.open) == (True, True, True)
    assert account.utm == (("utm_source", "acct"),)
    send = resolve(
        {
            SNAPSHOT_KEY: ACCOUNT,
            "tracking_settings": {
                "open_tracking": {"enable": False},
                "click_tracking": {"enable_text": False},
                "ganalytics": {"utm_campaign": "spring"},
            },
        },
        asm_group_id=None,
    )
    assert (send.click, send.click_text, send.open) == (True, False, False)
    assert send.utm == (("utm_source", "acct"), ("utm_campaign", "spring"))


def test_list_unsubscribe_with_a_group_subscription_tracking_or_bulk() -> None:
    assert resolve({}, asm_group_id=7).list_unsubscribe
    subscribed = resolve(
        {"tracking_settings": {"subscription_tracking": {"enable": True}}}, asm_group_id=None
    )
    assert subscribed.list_unsubscribe
    assert subscribed.subscription == Subscription(
        text=DEFAULT_SUBSCRIPTION_TEXT, html=DEFAULT_SUBSCRIPTION_HTML, substitution_tag=None
    )
    bulk = {"mail_settings": {"list_unsubscribe": {"enable": True}}}
    assert resolve(bulk, asm_group_id=None).list_unsubscribe
    account_bulk = {SNAPSHOT_KEY: {**ACCOUNT, "list_unsubscribe": True}}
    assert resolve(account_bulk, asm_group_id=None).list_unsubscribe
    opted_out = {**account_bulk, "mail_settings": {"list_unsubscribe": {"enable": False}}}
    assert not resolve(opted_out, asm_group_id=None).list_unsubscribe


def test_settings_of_the_wrong_type_count_as_absent() -> None:
    odd = {"tracking_settings": {"open_tracking": "yes", "click_tracking": {"enable": "true"}}}
    assert resolve(odd, asm_group_id=None) == NONE
