"""Email through stdlib ``smtplib``: STARTTLS or implicit TLS, optional AUTH, plain text + HTML parts."""

from __future__ import annotations

import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from rotator.events import Event
from rotator.notify.base import event_name, failure, message_fields, title
from rotator.notify.config import EmailConfig

__all__ = ["EmailNotifier", "email_message"]


def email_message(event: Event, config: EmailConfig) -> EmailMessage:
    """The multipart/alternative message for ``event``, addressed per ``config``."""
    _, emoji, headline, color = title(event)
    fields = message_fields(event)
    msg = EmailMessage()
    msg["Subject"] = f"{config.subject_prefix} {event_name(event)}: {event.secret}".strip()
    msg["From"] = config.from_
    msg["To"] = ", ".join(config.to)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid("rotator", domain=config.from_.rsplit("@", 1)[-1].strip(">"))
    msg["X-Rotator-Event"] = event_name(event)
    msg["X-Rotator-Correlation-Id"] = event.correlation_id
    width = max(len(label) for label, _ in fields)
    plain = [f"{headline}: {event.secret}", ""]
    plain += [f"{label + ':':<{width + 1}} {text}" for label, text in fields]
    plain += ["", "-- ", "sent by rotator"]
    msg.set_content("\n".join(plain) + "\n")
    rows = "\n".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0">{html.escape(label)}</th>'
        f"<td><code>{html.escape(text)}</code></td></tr>"
        for label, text in fields
    )
    msg.add_alternative(
        f"""<!doctype html>
<html><body style="font-family:sans-serif">
<h2 style="border-left:6px solid {color};padding-left:8px">{emoji} {html.escape(headline)}:
{html.escape(event.secret)}</h2>
<table>
{rows}
</table>
<p style="color:#6b7280">sent by rotator</p>
</body></html>
""",
        subtype="html",
    )
    return msg


_PERMANENT = (smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError)


def _retryable(exc: Exception) -> bool:
    """Temporary failures (network, 4xx replies) may pass on another attempt; 5xx, auth and TLS will not."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return not 500 <= exc.smtp_code < 600
    return True


class EmailNotifier:
    """Sends each event as one email to every configured recipient."""

    def __init__(self, name: str, config: EmailConfig) -> None:
        self.name = name
        self.config = config

    def secrets(self) -> tuple[str, ...]:
        return (self.config.password.get_secret_value(),) if self.config.password else ()

    def send(self, event: Event) -> None:
        """Deliver ``event``; raise DeliveryError if the server refuses it or any recipient."""
        try:
            refused = self._send(email_message(event, self.config))
        except Exception as exc:
            raise failure(self.name, exc, self.secrets(), retryable=_retryable(exc)) from None
        if refused:  # some recipients got it: another attempt would send them a duplicate
            raise failure(self.name, f"recipients refused: {', '.join(sorted(refused))}", self.secrets(),
                          retryable=False)

    def _send(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.ca_file)
        smtp: smtplib.SMTP
        if cfg.ssl:
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with smtp:
            smtp.ehlo()
            if cfg.starttls and not cfg.ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username is not None:
                password = cfg.password.get_secret_value() if cfg.password else ""
                smtp.login(cfg.username, password)
            refused: dict[str, tuple[int, bytes]] = smtp.send_message(msg, cfg.from_, cfg.to)
            return refused
