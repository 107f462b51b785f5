"""A real ``redis-server`` for the redis target tests: 127.0.0.1, a free port, a temp dir, ACL users on disk.

Two flavours, both with ``user default off`` and a least-privilege admin user whose rules are exactly the ones
the README documents (so the tests prove that list is enough):

* ``redis_server`` (session): users in an ``aclfile`` (``persist: acl_save``);
* ``redis_conf_server`` (session): users in ``redis.conf`` itself (``persist: config_rewrite``);
* ``redis_tls_server`` (session): TLS only, certificate from a throw-away CA.

``restart()`` stops the server (SHUTDOWN NOSAVE via SIGTERM) and starts it again on the same port and files, so
a test can prove an ACL change survives a restart. Skips with one line when ``redis-server`` is missing.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import require_binary

__all__ = ["ADMIN_RULES_ACL_SAVE", "ADMIN_RULES_REWRITE", "RedisServer", "redis_conf_server", "redis_server",
           "redis_tls_server", "write_certificates"]

ADMIN_RULES_ACL_SAVE = "resetchannels -@all +acl|setuser +acl|getuser +acl|save +ping"
ADMIN_RULES_REWRITE = "resetchannels -@all +acl|setuser +acl|getuser +config|rewrite +ping"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process in ``root``; ``admin_password`` logs in as ``rotator``."""

    def __init__(self, binary: str, root: Path, *, aclfile: bool, tls: bool = False) -> None:
        self.binary, self.root, self.aclfile = binary, root, aclfile
        self.port = free_port()
        self.admin_user = "rotator"
        self.admin_password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        digest = hashlib.sha256(self.admin_password.encode()).hexdigest()
        rules = ADMIN_RULES_ACL_SAVE if aclfile else ADMIN_RULES_REWRITE
        users = f"user default off\nuser {self.admin_user} on #{digest} {rules}\n"
        lines = [f"port {self.port}", "bind 127.0.0.1", f'dir "{root}"', 'save ""', "appendonly no",
                 'logfile "redis.log"', "daemonize no"]
        self.ca_file: Path | None = None
        if tls:
            self.ca_file, cert, key = write_certificates(root)
            lines[0] = f"port 0\ntls-port {self.port}"
            lines += [f'tls-cert-file "{cert}"', f'tls-key-file "{key}"', f'tls-ca-cert-file "{self.ca_file}"',
                      "tls-auth-clients no"]
        if aclfile:
            (root / "users.acl").write_text(users)
            lines.append(f'aclfile "{root / "users.acl"}"')
        else:
            lines += users.strip().splitlines()
        self.conf = root / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, str(self.conf)], cwd=self.root,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "redis.log").read_text() if (self.root / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start listening within 30s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def write_certificates(root: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (PEM files: ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    paths = root / "ca.pem", root / "server.pem", root / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _server(tmp_path_factory: pytest.TempPathFactory, *, aclfile: bool, tls: bool = False) -> Iterator[RedisServer]:
    binary = require_binary("redis-server", "redis-server")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"), aclfile=aclfile, tls=tls)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server whose users live in an aclfile (``persist: acl_save``)."""
    yield from _server(tmp_path_factory, aclfile=True)


@pytest.fixture(scope="session")
def redis_conf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server whose users live in redis.conf (``persist: config_rewrite``)."""
    yield from _server(tmp_path_factory, aclfile=False)


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that only speaks TLS (certificate for 127.0.0.1 from a throw-away CA in ``ca_file``)."""
    yield from _server(tmp_path_factory, aclfile=True, tls=True)
