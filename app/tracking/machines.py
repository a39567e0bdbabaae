"""Telling machine opens and clicks from people's, from what one request shows.

- Apple Mail Privacy Protection fetches every remote image of a message as it arrives,
  through Apple's relay (the iCloud Private Relay infrastructure, hosts mask.icloud.com),
  whether or not the message is ever read. Those fetches are reported (SocketLabs, Word to
  the Wise, Mailchimp's data) to carry a bare `Mozilla/5.0` user agent, and come from Apple's
  own 17.0.0.0/8 or from Private Relay's egress partners. Only opens are judged this way:
  Private Relay also carries people's own browsing, so a click from it is a person's.
- Security gateways (Proofpoint, Mimecast, Barracuda, Microsoft Defender Safe Links, …)
  fetch every link and image of a message to scan it, mostly with a user agent that names
  them or an HTTP library; and all of them do it within seconds of delivery, before anyone
  could have read the mail: a fetch that close to delivery is a machine's, whatever it says.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

APPLE_PROXY_USER_AGENT = "Mozilla/5.0"
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")  # Apple's own address block
DELIVERY_WINDOW = timedelta(seconds=5)
# Scanners, link expanders and HTTP libraries: no mail client sends these.
_SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|trend ?micro|symantec|messagelabs|"
    r"forcepoint|websense|zscaler|fortiguard|sophos|ironport|cisco|fireeye|trellix|"
    r"safelinks|bingpreview|spamtitan|hornetsecurity|cloudmark|avanan|checkpoint|"
    r"headlesschrome|phantomjs|python-|curl/|wget/|go-http-client|java/|okhttp|"
    r"libwww|httpclient|aiohttp|axios/|node-fetch|scanner|crawler|spider|\bbot\b|bot/",
    re.IGNORECASE,
)


class MachineKind(StrEnum):
    """Why a request was judged a machine's."""

    APPLE_PROXY = "apple_privacy_protection"
    SCANNER = "security_scanner"
    AT_DELIVERY = "at_delivery"


def is_apple_proxy(useragent: str, ip: str | None) -> bool:
    """An Apple Mail Privacy Protection fetch: its bare user agent, or Apple's network."""
    return useragent.strip() == APPLE_PROXY_USER_AGENT or (ip is not None and _in_apple(ip))


# Memoised: the same few user agents and addresses come back request after request, and
# matching them was a tenth of a pixel's CPU (bench/tracking.py --profile).
@lru_cache(maxsize=8192)
def _in_apple(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in APPLE_NETWORK
    except ValueError:
        return False


@lru_cache(maxsize=8192)
def is_scanner(useragent: str) -> bool:
    """A user agent no mail client sends: none at all, a scanner's or an HTTP library's."""
    return not useragent.strip() or _SCANNER_AGENTS.search(useragent) is not None


def machine_kind(
    *,
    useragent: str,
    ip: str | None,
    delivered_at: datetime | None,
    now: datetime,
    is_open: bool,
) -> MachineKind | None:
    """What kind of machine made this open or click, or None for a person."""
    if is_open and is_apple_proxy(useragent, ip):
        return MachineKind.APPLE_PROXY
    if is_scanner(useragent):
        return MachineKind.SCANNER
    if delivered_at is not None and now - delivered_at < DELIVERY_WINDOW:
        return MachineKind.AT_DELIVERY
    return None
