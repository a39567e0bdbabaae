"""What tracking costs the worker: CPU per copy of a 1,000-personalization send, composed and
DKIM-signed (RSA-2048) as the worker does it, with and without tracking.

    python -m bench.tracking_render [--recipients 1000] [--links 10] [--rounds 5]

Each personalization is its own copy (its own To), as in a v3 send with 1,000
personalizations, so every copy is rendered and signed in every scenario; tracking adds the
per-recipient tokens (AES-SIV) and the fill of the cut body, and the body's parse once. A
fresh Composer per round (cold caches, as for a new message). Process CPU time, best round.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from app.core.ids import new_id
from app.delivery.signing import DkimKey, DkimSigner, generate_rsa_key
from app.domains.models import Domain
from app.messages.compose import Composer, Copy
from app.messages.dispatch import ClaimedRecipient, LoadedMessage
from app.messages.models import Message
from app.tracking.links import LinkSettings

PARAGRAPH = "Our spring sale has started: everything in the shop is 20% off this week. "
FULL = {
    "click_tracking": {"enable": True, "enable_text": True},
    "open_tracking": {"enable": True},
    "subscription_tracking": {"enable": True},
    "ganalytics": {"enable": True, "utm_source": "columba", "utm_medium": "email"},
}
# label, stored settings, unsubscribe group
SCENARIOS: list[tuple[str, dict[str, Any], int | None]] = [
    ("no tracking", {}, None),
    ("List-Unsubscribe only (group)", {}, 7),
    ("open + click + subscription + GA, group", {"tracking_settings": FULL}, 7),
]


def message(settings: dict[str, Any], group: int | None, links: int) -> LoadedMessage:
    """A promotion with `links` links in its html, not yet in any database."""
    anchors = "".join(
        f'<li><a href="https://shop.example/item/{i}">Item {i}</a></li>' for i in range(links)
    )
    html = f"<html><body><p>{PARAGRAPH * 4}</p><ul>{anchors}</ul></body></html>"
    text = PARAGRAPH * 4 + "\n\nShop now: https://shop.example/sale\n"
    row = Message(
        id=new_id(),
        account_id=new_id(),
        domain_id=new_id(),
        from_email="deals@shop.example",
        from_name="Shop",
        to_header=[],
        cc_header=[],
        reply_to=[],
        subject="Spring sale",
        text=text,
        html=html,
        headers=[],
        categories=["promotion"],
        custom_args={},
        message_id_header="<bench@mta.shop.example>",
        created_at=datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
        template_engine=None,
        template_data=None,
        sections={},
        asm_group_id=group,
        settings=settings,
        raw_mime=None,
    )
    domain = Domain(id=row.domain_id, name="shop.example", bounce_domain="bounces.shop.example")
    return LoadedMessage(row, (), domain)


def recipients(loaded: LoadedMessage, count: int) -> list[ClaimedRecipient]:
    """`count` personalizations, one address each."""
    return [
        ClaimedRecipient(
            id=new_id(),
            message_id=loaded.message.id,
            account_id=loaded.message.account_id,
            email=f"customer{i}@example.org",
            domain="example.org",
            attempt_count=0,
            personalization={"to": [{"email": f"customer{i}@example.org", "name": None}]},
            token=new_id(),
        )
        for i in range(count)
    ]


def measure(
    loaded: LoadedMessage, claimed: list[ClaimedRecipient], signer: DkimSigner, rounds: int
) -> tuple[float, int]:
    """Best CPU seconds to compose all copies, and the bytes of one copy."""
    links = LinkSettings("https://links.shop.example", b"k" * 48)
    best, size = float("inf"), 0
    for _ in range(rounds):
        composer = Composer(lambda _loaded: signer, links=links)
        started = time.process_time()
        copies = composer.copies(loaded, claimed)
        best = min(best, time.process_time() - started)
        first = copies[0]
        assert isinstance(first, Copy), first
        size = len(first.data)
    return best, size


def main() -> None:
    """Print the CPU per copy of each scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--links", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    signer = DkimSigner([DkimKey("shop.example", "s1", generate_rsa_key())])
    print(f"{args.recipients} personalizations, {args.links} links in the html, RSA-2048 DKIM")
    baseline = None
    for label, settings, group in SCENARIOS:
        loaded = message(settings, group, args.links)
        seconds, size = measure(loaded, recipients(loaded, args.recipients), signer, args.rounds)
        per_copy = seconds / args.recipients * 1e6
        baseline = baseline or per_copy
        print(
            f"  {label:<42} {per_copy:7.0f} µs CPU per copy  ({per_copy / baseline:4.2f}×)"
            f"  {size} bytes"
        )


if __name__ == "__main__":
    main()
