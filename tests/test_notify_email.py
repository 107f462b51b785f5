"""Tests of the email notifier against a real SMTP server (aiosmtpd): plain, STARTTLS, implicit TLS, AUTH."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from rotator.events import Event, EventType
from rotator.notify import DeliveryError, DeliveryPolicy, Dispatcher, EmailConfig
from rotator.notify.email import EmailNotifier

PASSWORD = "smtp-CANARY-password-91xq"
USER = "rotator-bot"
FAST = DeliveryPolicy(attempts=3, initial=0.01, max=0.02)
RECIPIENTS = ["security@example.com", "oncall@example.org"]


@dataclass
class Mailbox:
    """What the SMTP server received, and how it can be told to misbehave."""

    messages: list[tuple[Envelope, EmailMessage, bool]] = field(default_factory=list)
    logins: list[tuple[bytes, bool]] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)  # replies to DATA before accepting
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            raw = envelope.original_content or b""
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            encrypted = server.transport is not None and server.transport.get_extra_info("ssl_object")
            self.messages.append((envelope, parsed, bool(encrypted)))
        return "250 Message accepted"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        self.logins.append((auth_data.login, ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 235/535 reply


def make_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1: the server context and the CA file the client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """The server TLS context and CA file shared by this module's tests."""
    return make_tls(tmp_path_factory.mktemp("tls"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Start = Callable[..., tuple[Mailbox, int]]


@pytest.fixture
def smtp_server() -> Iterator[Start]:
    """Start an aiosmtpd server on 127.0.0.1 with the given Controller options; stopped after the test."""
    started: list[Controller] = []

    def start(**options: Any) -> tuple[Mailbox, int]:
        box = Mailbox()
        if options.pop("auth", False):
            options["authenticator"] = box.authenticate
        port = free_port()
        controller = Controller(box, hostname="127.0.0.1", port=port, **options)
        controller.start()
        started.append(controller)
        return box, port

    yield start
    for controller in started:
        controller.stop()


def _config(port: int, **kw: Any) -> EmailConfig:
    data: dict[str, Any] = {"type": "email", "host": "127.0.0.1", "port": port, "from": "rotator@example.com",
                            "to": RECIPIENTS, "timeout": 5, "retry": FAST, **kw}
    return EmailConfig.model_validate(data)


def _event(kind: EventType = EventType.SUCCEEDED) -> Event:
    return Event(
        type=kind, secret="payments/webhook-hmac", provider="vault",
        at=dt.datetime(2025, 3, 1, 3, 0, tzinfo=dt.UTC), actor="cli:alice", correlation_id="corr-42",
        reason="incident <INC-7> & cleanup", new_version="v9", old_version="v8",
        details={"grace_until": "2025-03-04T03:00:00+00:00"},
    )


def _check_message(msg: EmailMessage) -> None:
    assert msg["Subject"] == "[rotator] rotation.succeeded: payments/webhook-hmac"
    assert msg["From"] == "rotator@example.com"
    assert [a.addr_spec for a in msg["To"].addresses] == RECIPIENTS
    assert msg["Message-ID"].startswith("<")
    assert msg["Message-ID"].endswith("@example.com>")
    assert msg["Date"]
    assert msg["X-Rotator-Event"] == "rotation.succeeded"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None
    assert rich is not None
    text, markup = plain.get_content(), rich.get_content()
    for expected in ("Rotation succeeded: payments/webhook-hmac", "vault", "v9", "v8", "cli:alice", "corr-42",
                     "2025-03-04 03:00:00 UTC", "incident <INC-7> & cleanup"):
        assert expected in text
    assert "incident &lt;INC-7&gt; &amp; cleanup" in markup
    assert "<INC-7>" not in markup
    assert "<td><code>v9</code></td>" in markup


def test_plain_smtp(smtp_server: Start) -> None:
    """Without TLS the message reaches every recipient with the headers and both parts."""
    box, port = smtp_server()
    EmailNotifier("security", _config(port, starttls=False)).send(_event())
    ((envelope, msg, encrypted),) = box.messages
    assert envelope.mail_from == "rotator@example.com"
    assert envelope.rcpt_tos == RECIPIENTS
    assert not encrypted
    _check_message(msg)


def test_starttls_with_auth(smtp_server: Start, tls: tuple[ssl.SSLContext, Path]) -> None:
    """With STARTTLS required and AUTH, the client upgrades, logs in and delivers."""
    context, ca_file = tls
    box, port = smtp_server(tls_context=context, require_starttls=True, auth=True, auth_require_tls=True)
    config = _config(port, ca_file=str(ca_file), username=USER, password=PASSWORD)
    EmailNotifier("security", config).send(_event())
    assert box.logins == [(USER.encode(), True)]
    ((_, msg, encrypted),) = box.messages
    assert encrypted
    _check_message(msg)


def test_implicit_tls(smtp_server: Start, tls: tuple[ssl.SSLContext, Path]) -> None:
    """ssl: true speaks TLS from the first byte (SMTPS)."""
    context, ca_file = tls
    box, port = smtp_server(ssl_context=context, auth=True, auth_require_tls=False)  # TLS, unseen by aiosmtpd
    config = _config(port, ssl=True, ca_file=str(ca_file), username=USER, password=PASSWORD)
    assert not config.starttls
    EmailNotifier("security", config).send(_event())
    ((_, msg, encrypted),) = box.messages
    assert encrypted
    _check_message(msg)


def test_untrusted_certificate_refused(smtp_server: Start, tls: tuple[ssl.SSLContext, Path]) -> None:
    """A server certificate outside the trusted CAs fails the delivery without retrying and without AUTH."""
    context, _ = tls
    box, port = smtp_server(tls_context=context, require_starttls=True, auth=True)
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as info:
        EmailNotifier("security", _config(port, username=USER, password=PASSWORD)).send(_event())
    assert not info.value.retryable
    assert box.logins == []


def test_wrong_password_fails_once_and_redacted(smtp_server: Start, tls: tuple[ssl.SSLContext, Path]) -> None:
    """A rejected login is permanent: one attempt, one failed result, and the password appears nowhere."""
    context, ca_file = tls
    box, port = smtp_server(tls_context=context, require_starttls=True, auth=True)
    wrong = "smtp-CANARY-wrong-password-55"
    config = _config(port, ca_file=str(ca_file), username=USER, password=wrong)
    results: list[tuple[str, Exception | None]] = []
    with capture_logs() as logs, Dispatcher({"security": config}, lambda s: ["security"],
                                            on_result=lambda n, e, r, x: results.append((r, x))) as d:
        d(_event())
    assert box.logins == [(USER.encode(), False)] * 2  # smtplib tries PLAIN then LOGIN; no second attempt
    ((result, exc),) = results
    assert result == "failed"
    assert "535" in str(exc)
    (failure,) = d.failures()
    for text in (str(exc), repr(exc), failure.reason, repr(logs), repr(config)):
        assert wrong not in text
        assert PASSWORD not in text


def test_temporary_refusal_retried(smtp_server: Start) -> None:
    """A 451 reply to DATA twice is retried and the message is accepted exactly once."""
    box, port = smtp_server()
    box.data_replies = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
    results: list[str] = []
    with Dispatcher({"mail": _config(port, starttls=False)}, lambda s: ["mail"],
                    on_result=lambda n, e, r, x: results.append(r)) as d:
        d(_event())
    assert results == ["ok"]
    assert len(box.messages) == 1


def test_refused_recipient_not_resent(smtp_server: Start) -> None:
    """When one recipient is refused the others get the message once and the delivery is reported failed."""
    box, port = smtp_server()
    box.refuse = {"oncall@example.org"}
    results: list[tuple[str, Exception | None]] = []
    with Dispatcher({"mail": _config(port, starttls=False)}, lambda s: ["mail"],
                    on_result=lambda n, e, r, x: results.append((r, x))) as d:
        d(_event())
    ((envelope, _, _),) = box.messages
    assert envelope.rcpt_tos == ["security@example.com"]
    ((result, exc),) = results
    assert result == "failed"
    assert "oncall@example.org" in str(exc)


def test_email_only_on_failures(smtp_server: Start) -> None:
    """An events filter of [rotation.failed] mails failures and nothing else."""
    box, port = smtp_server()
    config = _config(port, starttls=False, events=["rotation.failed"])
    with Dispatcher({"mail": config}, lambda s: ["mail"]) as d:
        for kind in EventType:
            d(_event(kind))
    assert [msg["X-Rotator-Event"] for _, msg, _ in box.messages] == ["rotation.failed"]
    assert box.messages[0][1]["Subject"] == "[rotator] rotation.failed: payments/webhook-hmac"


def test_send_test_email(smtp_server: Start) -> None:
    """send_test mails a notification.test message even to a failures-only notifier."""
    box, port = smtp_server()
    config = _config(port, starttls=False, events=["rotation.failed"], subject_prefix="[rotator:prod]")
    with Dispatcher({"mail": config}, lambda s: []) as d:
        d.send_test("mail")
    ((_, msg, _),) = box.messages
    assert msg["Subject"] == "[rotator:prod] notification.test: rotator/notify-test"
    plain = msg.get_body(("plain",))
    assert plain is not None
    assert "Test notification" in plain.get_content()
