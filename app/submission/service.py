"""Accepting a message submitted over SMTP: the rules and the one transaction of POST /v1/send
(app.messages.service), fed from the SMTP envelope and the prepared MIME."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.asm import service as asm
from app.common.fields import EmailAddress
from app.core.errors import BadRequest, Forbidden, Unauthorized
from app.delivery.content import Address
from app.domains import service as domains
from app.domains.models import Domain
from app.messages import service as messages
from app.messages.models import Message
from app.messages.submission import Personalization, Submission
from app.submission.prepare import PreparedMessage


@dataclass(frozen=True, slots=True)
class Authorised:
    """What the checks established: whose message it is and which domain signs it."""

    account_id: str
    domain_id: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """One SMTP mail transaction as the listener received it."""

    message_id: str
    api_key_id: str
    mail_from: str
    recipients: tuple[str, ...]  # normalised, without duplicates
    size: int  # bytes the client sent (what SIZE and the size limit count)
    client_ip: str
    helo: str
    tls_version: str | None
    accepted_at: datetime
    request_id: str | None = None  # the SMTP session's: its events and logs name it


@dataclass
class Lookups:
    """Keys and sending domains already looked up in the current transaction: the messages of
    one batch share the answers (they cannot differ within one transaction's moment)."""

    principals: dict[str, Principal | None] = field(default_factory=dict)
    domains: dict[tuple[str, str], Domain] = field(default_factory=dict)
    groups: dict[tuple[str, int], bool] = field(default_factory=dict)  # is (account, id) one


async def authorise_submission(
    session: AsyncSession,
    *,
    transaction: Transaction,
    prepared: PreparedMessage,
    policy: messages.AcceptPolicy,
    lookups: Lookups,
) -> Authorised:
    """The checks of POST /v1/send, before anything is written: the key is still active (a
    key revoked during a long session stops sending at once), may send mail, owns the From
    domain, and the message is within the size limit. Raises the API's errors."""
    key_id = transaction.api_key_id
    if key_id not in lookups.principals:
        lookups.principals[key_id] = await accounts.active_principal(session, api_key_id=key_id)
    principal = lookups.principals[key_id]
    if principal is None:
        raise Unauthorized("the API key was revoked")
    if not principal.allows(Scope.MAIL_SEND):
        raise Forbidden(f"this API key lacks the {Scope.MAIL_SEND} scope")
    from_domain = (principal.account.id, prepared.sender.email.rpartition("@")[2].lower())
    domain = lookups.domains.get(from_domain)
    if domain is None:
        domain = await messages.authorise_sender(
            session, principal=principal, email=prepared.sender.email, policy=policy
        )
        lookups.domains[from_domain] = domain
    if prepared.sender_field is not None:
        await _authorise_sender_field(session, principal, prepared.sender_field.email, lookups)
    if prepared.options.asm_group_id is not None:
        await _authorise_group(session, principal, prepared.options.asm_group_id, lookups)
    messages.check_size(transaction.size, policy=policy)
    return Authorised(account_id=principal.account.id, domain_id=domain.id)


async def _authorise_sender_field(
    session: AsyncSession, principal: Principal, email: str, lookups: Lookups
) -> None:
    """Sender names who sent the message for its author (RFC 5322 §3.6.2), and mail clients
    show it ("on behalf of"): like From, it must be a sending domain of the key's account."""
    email_domain = email.rpartition("@")[2].lower()
    if (principal.account.id, email_domain) in lookups.domains:
        return  # a From domain of this batch already: a sending domain of the account
    domain = await domains.sending_domain_for(
        session, account_id=principal.account.id, email_domain=email_domain
    )
    if domain is None:
        raise Forbidden(
            f"The Sender domain {email_domain} is not a sending domain of this account",
            "sender",
        )


async def _authorise_group(
    session: AsyncSession, principal: Principal, group_id: int, lookups: Lookups
) -> None:
    """X-SMTPAPI's asm_group_id must be an unsubscribe group of the account: BadRequest."""
    key = (principal.account.id, group_id)
    if key not in lookups.groups:
        found = await asm.existing_groups(session, account_id=key[0], ids=[group_id])
        lookups.groups[key] = group_id in found
    if not lookups.groups[key]:
        raise BadRequest(
            f"'asm_group_id' {group_id} is not an unsubscribe group of this account",
            "asm_group_id",
        )


def checked_submission(
    transaction: Transaction,
    prepared: PreparedMessage,
    *,
    authorised: Authorised,
    hostname: str,
    tombstone_key: bytes = b"",
) -> messages.Checked:
    """An authorised message as the accept path of the send APIs writes it (write_messages,
    with the other messages of its transaction)."""
    return messages.Checked(
        message=_message_row(transaction, prepared, authorised=authorised, hostname=hostname),
        submission=_as_submission(transaction, prepared),
        tombstone_key=tombstone_key,
    )


def _message_row(
    transaction: Transaction,
    prepared: PreparedMessage,
    *,
    authorised: Authorised,
    hostname: str,
) -> Message:
    """The messages row: the raw MIME to send, and the fields the message view shows."""
    options = prepared.options
    return Message(
        id=transaction.message_id,
        account_id=authorised.account_id,
        api_key_id=transaction.api_key_id,
        domain_id=authorised.domain_id,
        from_email=prepared.sender.email,
        from_name=prepared.sender.name,
        to_header=[_address_json(a) for a in prepared.to],
        cc_header=[_address_json(a) for a in prepared.cc],
        reply_to=[_address_json(a) for a in prepared.reply_to],
        subject=prepared.subject,
        text=None,
        html=None,
        headers=[],
        categories=list(options.categories),
        custom_args=dict(options.unique_args),
        # Columba's own id in Message-ID form (unique); the MIME keeps the client's Message-ID,
        # which need not be unique (a client may resend, or split recipients over transactions).
        message_id_header=f"<{transaction.message_id.lower()}@{hostname}>",
        size=len(prepared.data),
        created_at=transaction.accepted_at,
        template_id=None,
        template_engine=None,
        sections={},
        batch_id=None,
        send_at=options.send_at,
        asm_group_id=options.asm_group_id,
        settings={},
        raw_mime=prepared.data,
        request_id=transaction.request_id,
    )


def _as_submission(transaction: Transaction, prepared: PreparedMessage) -> Submission:
    """The message as the accept path sees a send: one copy for every envelope recipient,
    each under the header that shows it (none: Bcc), and the X-SMTPAPI options."""
    # To wins over Cc for an address in both, as a mail client shows it.
    shown = {a.email.lower(): "cc" for a in prepared.cc} | {
        a.email.lower(): "to" for a in prepared.to
    }
    kinds: dict[str, list[EmailAddress]] = {"to": [], "cc": [], "bcc": []}
    for email in transaction.recipients:
        # Validated at RCPT already: constructed, not validated again.
        kinds[shown.get(email.lower(), "bcc")].append(EmailAddress.model_construct(email=email))
    sender = prepared.sender
    options = prepared.options
    return Submission(
        sender=EmailAddress.model_construct(email=sender.email, name=sender.name),
        personalizations=(
            Personalization(to=tuple(kinds["to"]), cc=tuple(kinds["cc"]), bcc=tuple(kinds["bcc"])),
        ),
        subject=prepared.subject,
        categories=options.categories,
        custom_args=dict(options.unique_args),
        send_at=options.send_at,
        asm_group_id=options.asm_group_id,
    )


def submission_row(transaction: Transaction, *, account_id: str) -> dict[str, Any]:
    """The SMTP side of the message (who handed it over, from where, how), as the columns of
    its smtp_submissions row."""
    return {
        "message_id": transaction.message_id,
        "account_id": account_id,
        "api_key_id": transaction.api_key_id,
        "client_ip": transaction.client_ip,
        "helo": transaction.helo[:255],
        "tls_version": transaction.tls_version,
        "envelope_from": transaction.mail_from[:320],
        "created_at": transaction.accepted_at,
    }


def _address_json(address: Address) -> dict[str, Any]:
    return {"email": address.email, "name": address.name}
