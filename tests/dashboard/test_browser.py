"""The dashboard in a real browser (Playwright driving Debian's Chromium, headless).

Each test saves screenshots under var/test-artifacts/dashboard/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.dashboard.conftest import DevDashboard, sample_mail
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "dashboard"
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (`playwright install` cannot download here: Debian's binary)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        await launched.close()


async def _page(browser: Browser, base_url: str, viewport: dict[str, int] | None = None) -> Page:
    """A page whose console errors (a CSP violation above all) fail the test."""
    context = await browser.new_context(
        base_url=base_url,
        viewport=viewport or {"width": 1280, "height": 900},  # type: ignore[arg-type]
    )
    page = await context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def _shot(page: Page, name: str) -> None:
    """A full-page screenshot to look at."""
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def _sign_in(page: Page, key: str) -> None:
    """Sign in through the form, as a person would."""
    await page.goto("/dashboard/signin")
    await page.fill("#key", key)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Overview")


async def _send(client: httpx.AsyncClient, sender: Sender, to: list[str], subject: str) -> None:
    answer = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={
            "from": sender.address(), "to": to, "subject": subject, "text": "Shipped.",
            "html": "<h2>Order shipped</h2><p>It is <b>on its way</b>.</p>",
        },
    )  # fmt: skip
    assert answer.status_code == 202, answer.text


async def test_overview_chart_search_and_timeline(
    browser: Browser,
    api: ApiServer,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Callable[[], Awaitable[int]],
) -> None:
    mx.reply_at("RCPT", 450, to="busy@example.test")
    for number in range(3):
        await _send(client, sender, [f"buyer{number}@example.test"], f"Order {number} shipped")
    await _send(client, sender, ["busy@example.test"], "Order 9 shipped")
    await deliver()
    page = await _page(browser, api.url)
    await _sign_in(page, sender.key)
    await expect(page.locator("#chart.drawn canvas")).to_be_visible()
    await expect(page.locator(".tile", has_text="delivered")).to_contain_text("3")
    await _shot(page, "overview")

    await page.click("text=Activity")
    await page.fill("input[name=recipient]", "buyer1@example.test")
    await page.click("text=Search")
    rows = page.locator("table.list tbody tr")
    await expect(rows).to_have_count(1)
    await _shot(page, "activity-search")

    await rows.locator("a").first.click()
    await expect(page.locator(".timeline li.attempt")).to_contain_text("attempt: delivered")
    await expect(page.locator(".timeline")).to_contain_text("250")
    await _shot(page, "timeline")

    await page.click("text=Rendered message, raw source and DKIM")
    await expect(page.locator(".checks li.ok")).to_contain_text("pass: d=sender.test")
    frame = page.frame_locator("iframe.mail")
    await expect(frame.locator("h2")).to_have_text("Order shipped")
    await _shot(page, "source")

    phone = await _page(browser, api.url, PHONE)
    await _sign_in(phone, sender.key)
    await expect(phone.locator("#chart.drawn canvas")).to_be_visible()
    await _shot(phone, "overview-phone")
    assert page.errors == []  # type: ignore[attr-defined]
    assert phone.errors == []  # type: ignore[attr-defined]


async def test_suppression_added_and_removed_and_key_revoked(
    browser: Browser, api: ApiServer, sender: Sender
) -> None:
    page = await _page(browser, api.url)
    await _sign_in(page, sender.key)
    await page.click("text=Suppressions")
    await expect(page.locator(".empty")).to_contain_text("No suppressions")
    await page.fill("input[name=email][type=email]", "gone@example.test")
    await page.fill("input[name=reason]", "asked us to stop")
    await page.click("button:text-is('Add')")
    row = page.locator("table.list tbody tr", has_text="gone@example.test")
    await expect(row).to_have_count(1)
    await _shot(page, "suppression-added")
    await row.locator("button", has_text="Remove").click()
    await expect(page.locator("table.list")).to_have_count(0)
    await expect(page.locator(".notice")).to_contain_text("removed")

    await page.click("text=API keys")
    await page.fill("input[name=name]", "ci-reporting")
    await page.check("input[value='stats.read']")
    await page.click("button:text('Create')")
    await expect(page.locator("#new-key")).to_contain_text("SG.")
    await _shot(page, "key-created")
    row = page.locator("table.list tbody tr", has_text="ci-reporting")
    await row.locator("button", has_text="Revoke").click()
    await expect(page.locator("tr.revoked", has_text="ci-reporting")).to_have_count(1)
    await _shot(page, "key-revoked")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_captured_mail_opens_without_running_its_script(
    browser: Browser, dev_dashboard: DevDashboard, sender: Sender
) -> None:
    await dev_dashboard.capture(sample_mail())
    page = await _page(browser, dev_dashboard.api.url)
    await page.goto(dev_dashboard.signin_link(sender.key))
    await page.click("text=Mailbox")
    await page.click("text=Your receipt")
    frame = page.frame_locator("iframe.mail")
    await expect(frame.locator("h1")).to_have_text("Receipt")
    await expect(page.locator("a[download]")).to_have_text("receipt.pdf")
    await _shot(page, "mailbox-mail")
    iframe = page.frames[1]
    assert await iframe.title() != "owned"  # the sandbox kept the script from running
    # What the browser refused, and nothing else: the script (sandboxed frame) and the
    # remote image (the frame's CSP allows data: images only).
    errors: list[str] = page.errors  # type: ignore[attr-defined]
    assert any("sandboxed" in e and "script" in e for e in errors), errors
    assert any("pixel.gif" in e and "img-src data:" in e for e in errors), errors
    assert all("sandboxed" in e or "Content Security Policy" in e for e in errors), errors
