"""The attachment policy of the send APIs, applied to every part of a submitted message."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.messages.models import Message
from app.submission.parts import MAX_NESTING, check_attachments
from app.submission.replies import Refusal
from tests.submission.clients import Listener
from tests.support import Sender

MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00"


def message(*files: tuple[str, bytes], body: str = "See attached.") -> EmailMessage:
    """A message with `files` attached as application/octet-stream."""
    mail = EmailMessage()
    mail["From"] = "a@shop.test"
    mail["Subject"] = "files"
    mail.set_content(body)
    for name, content in files:
        mail.add_attachment(content, "application", "octet-stream", filename=name)
    return mail


def refusal(mail: EmailMessage) -> Refusal:
    with pytest.raises(Refusal) as refused:
        check_attachments(bytes(mail))
    return refused.value


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("readme.txt", MZ, "an executable program"),
        ("setup.exe", b"x", "attachments of type .exe are blocked"),
        ("evil.ex\u0435", b"x", "imitates the .exe extension"),  # RFC 2231 encoded
        ("evil.exe;.txt", b"x", "attachments of type .exe are blocked"),
        ("a.7z", b"7z\xbc\xaf\x27\x1c", ".7z archives cannot be inspected"),
    ],
)
def test_attachments_are_held_to_the_api_policy(name: str, content: bytes, problem: str) -> None:
    refused = refusal(message(("ok.pdf", b"%PDF-1.4"), (name, content)))
    assert (refused.code, refused.enhanced) == (554, "5.7.1")
    assert refused.text.startswith(f"Message refused: attachment {name!r}: ")
    assert problem in refused.text


def test_an_encoded_word_file_name_is_read_as_mail_programs_read_it() -> None:
    mail = message(("placeholder.txt", b"x"))
    attachment = next(iter(mail.iter_attachments()))
    del attachment["Content-Disposition"]
    attachment["Content-Disposition"] = 'attachment; filename="=?utf-8?B?ZXZpbC5leGU=?="'
    assert "attachments of type .exe are blocked" in refusal(mail).text


def test_a_forwarded_message_is_looked_into() -> None:
    outer = message()
    outer.add_attachment(message(("setup.scr", b"x")))  # message/rfc822
    assert "attachments of type .scr are blocked" in refusal(outer).text


def test_a_part_without_a_name_is_checked_unless_it_is_text() -> None:
    mail = message(body="MZ is how our newsletter starts, and it is text.")
    check_attachments(bytes(mail))  # the body is no program
    mail.add_attachment(MZ, "application", "x-msdownload")
    assert refusal(mail).text == (
        "Message refused: an attachment without a name: the attachment is an executable "
        "program, which providers block"
    )


def test_a_message_with_ordinary_attachments_passes() -> None:
    check_attachments(bytes(message(("report.pdf", b"%PDF-1.4"), ("notes.txt", b"hello"))))


async def test_the_listener_refuses_such_a_message_and_stores_nothing(
    submission: Listener, sender: Sender, db: Database
) -> None:
    mail = message(("readme.txt", MZ))
    mail.replace_header("From", sender.address())

    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(bytes(mail))

    code, reply = await asyncio.to_thread(talk)
    assert code == 554, reply
    assert reply.startswith(b"5.7.1 Message refused: attachment 'readme.txt': ")
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(Message))).scalar_one() == 0


def nested(levels: int) -> bytes:
    """A message of `levels` multiparts, one inside the other."""
    head = b"From: a@shop.test\r\nMIME-Version: 1.0\r\n"
    body = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
        for n in range(levels)
    )
    return head + body + b"Content-Type: text/plain\r\n\r\nhi\r\n"


def test_mime_nesting_is_bounded() -> None:
    check_attachments(nested(MAX_NESTING))
    with pytest.raises(Refusal) as refused:
        check_attachments(nested(5000))  # once a RecursionError, answered 451
    assert refused.value.reply == (
        "554 5.6.0 Message refused: MIME parts nested more than 100 levels deep"
    )
