"""What a send with a stored template carries, as SendGrid decides it.

tsg_mail_v3.yaml, `template_id`: "A template that contains a subject and content—either text
or html—will override any subject and content values specified at the personalizations or
message level. If a template ID begins with `d-`, it is a dynamic template and will work with
the `dynamic_template_data` property. If the template ID does not begin with `d-`, it is a
standard SendGrid template and will work with the `substitutions` property."

- A dynamic template: its subject (a template itself, over the copy's data) and its parts
  only. The request's subject and content, and the personalizations' subjects, are not used:
  a request's text/plain is not sent beside a template's html.
- A legacy template: the request's subject goes into the template's `<%subject%>` tag (a
  personalization's subject into its copy's), the request's text and html into the `<%body%>`
  tags of the template's text and html; then the substitutions apply, as without a template.
"""

from __future__ import annotations

import html as html_text
from dataclasses import dataclass, replace

from app.messages.submission import Submission
from app.templates.models import TemplateEngine, TemplateVersion
from app.templates.plaintext import plain_text

SUBJECT_TAG = "<%subject%>"
BODY_TAG = "<%body%>"


@dataclass(frozen=True, slots=True)
class Parts:
    """The subject, text and html a message is stored with, and the engine that renders
    them per copy (None: literal, substitutions only)."""

    subject: str
    text: str | None
    html: str | None
    engine: str | None


def template_parts(
    engine: str, version: TemplateVersion, submission: Submission
) -> tuple[Parts, Submission]:
    """The message's parts with a stored template, and the submission as its copies use it
    (personalizations' subjects dropped for a dynamic template, wrapped for a legacy one)."""
    if engine == TemplateEngine.LEGACY:
        return _legacy(version, submission)
    personalizations = tuple(replace(p, subject=None) for p in submission.personalizations)
    parts = Parts(version.subject, version.text, version.html, engine)
    return parts, replace(submission, subject=None, personalizations=personalizations)


def _legacy(version: TemplateVersion, submission: Submission) -> tuple[Parts, Submission]:
    """The request's subject and content put into the template's tags."""
    personalizations = tuple(
        p
        if p.subject is None
        else replace(p, subject=_into(version.subject, SUBJECT_TAG, p.subject))
        for p in submission.personalizations
    )
    text = submission.text
    if text is None and submission.html is not None:
        text = plain_text(submission.html)
    html = submission.html
    if html is None and submission.text is not None:
        html = html_text.escape(submission.text).replace("\n", "<br>\n")
    parts = Parts(
        subject=_into(version.subject, SUBJECT_TAG, submission.subject or ""),
        text=None if version.text is None else _into(version.text, BODY_TAG, text or ""),
        html=None if version.html is None else _into(version.html, BODY_TAG, html or ""),
        engine=None,
    )
    return parts, replace(submission, personalizations=personalizations)


def _into(template: str, tag: str, value: str) -> str:
    """`template` with every `tag` replaced by `value` (in one pass: never re-replaced)."""
    return template.replace(tag, value)
