"""moto in server mode for the AWS tests and benchmark: real boto3 over HTTP to 127.0.0.1.

:class:`GatedMotoServer` is moto's ``ThreadedMotoServer`` with a WSGI middleware in front that can add
latency, answer AccessDeniedException for chosen actions, fail chosen requests with a 500, and count calls by
action. ``stop()`` really closes the socket and every open connection (clients get "connection refused" or
a dropped connection) and ``start()`` again reuses the port; moto's state lives in the process, so it
survives a restart. One server per process, created on first use. Tests use unique secret names instead of
resetting moto.

Where it differs from a plain ``ThreadedMotoServer``, to behave more like AWS and cost less CPU:

* HTTP/1.1 keep-alive: the gate is served by cheroot (a thread pool of 64) instead of werkzeug's dev server,
  which always answers ``Connection: close`` and so made every boto3 call a new TCP connection and a new
  thread. ``connections`` counts the TCP connections accepted since the last ``reset_counts()``.
* Secrets Manager requests (``X-Amz-Target: secretsmanager.*``) go straight to one cached moto app instead of
  ``DomainDispatcherApplication``, which lists moto's package directory on disk on every request; STS calls
  and ``/moto-api`` still go through the dispatcher.
* ``moto.core.responses.method_names_from_class`` (``inspect.getmembers`` on every request) is memoised, and
  moto's ``SecretsStore`` looks a secret up by its name (the dict key) before scanning every secret for a
  matching ARN: moto's scan made each call cost O(secrets stored), so a benchmark got slower with every secret
  an earlier run had created.
* Fidelity shim for a moto deviation: real AWS refuses ``PutSecretValue`` (and ``UpdateSecret``) whose
  ``ClientRequestToken`` is the VersionId of an existing version that has a value, when the new value differs:
  ``ResourceExistsException`` "You can't use ClientRequestToken ... because that value is already in use for
  a version of secret ..." (AWS API reference, API_PutSecretValue, ClientRequestToken). moto 5.2.5 instead
  overwrites the value when that version carries AWSPENDING (``_check_with_existing_secrets_and_versions`` in
  ``moto/secretsmanager/models.py``). The gate answers like AWS, checking and dispatching these writes under
  one lock so two racers with the same token cannot both pass. The same token with the same value still
  succeeds (idempotent retry), and a version that has no value yet (the empty AWSPENDING version moto's own
  ``rotate_secret`` creates for a Lambda to fill) is still moto's to fill.
* Fidelity shim for CreatedDate: AWS reports it to the millisecond, moto stores whole seconds; the gate keeps
  the time of a token write to the millisecond, so a version's age (counted from its creation) is not a second
  off.
* Fidelity shim for IAM access keys: AWS refuses any request signed with an **Inactive** access key
  (``InvalidClientTokenId``, HTTP 403); moto 5.2.5 accepts it (``IAMUserAccessKey`` ignores the status). The gate
  answers like AWS for keys of moto IAM users (ids starting ``AKIA``); the dummy ``testing`` key is unaffected.
  :func:`iam_authentication` turns on moto's own signature and policy checks for a block (moto exempts
  ``sts:GetCallerIdentity`` from policies, as AWS does), so a wrong secret gets ``SignatureDoesNotMatch``.
* Quotas (``quotas = {"writes": 10}``, classes as ``rotator_aws._quota.QUOTA_CLASS``): a class that sends more
  than its rate answers ``ThrottlingException`` (400, "Rate exceeded") as AWS does. Each class is a bucket of
  ``rate`` tokens refilled at ``rate``/s (AWS's throttling model: a steady ``rate``/s always passes, a burst
  beyond the bucket does not), so the network jitter between a paced client and the server is not counted as
  a violation. ``throttled`` counts the refusals by class.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.makefile import MakeFile
from moto.server import ThreadedMotoServer

__all__ = ["GatedMotoServer", "aws_env", "iam_authentication", "moto", "shared_server", "unique"]

Rule = Callable[[str, dict[str, Any]], bool]  # (action, request JSON) -> applies?
REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
QUOTA_CLASS = {  # as rotator_aws._quota.QUOTA_CLASS (kept separate: the test server does not import rotator)
    "PutSecretValue": "writes", "UpdateSecret": "writes", "UpdateSecretVersionStage": "writes",
    "TagResource": "tags", "UntagResource": "tags",
    "GetSecretValue": "get_secret_value", "DescribeSecret": "describe_secret",
    "ListSecrets": "list_secrets", "BatchGetSecretValue": "batch_get_secret_value",
}
THREADS = 64  # requests in flight at once: the gate sleeps `delay` inside a request; the benchmark runs 16 clients
TOKEN_WRITES = frozenset({"PutSecretValue", "UpdateSecret"})  # writes whose ClientRequestToken names a version


class _Connection(cheroot_server.HTTPConnection):
    """A cheroot connection that reports its acceptance to the server."""

    def __init__(self, server: _Server, sock: Any, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, makefile)
        server.on_accept()


class _Server(cheroot_wsgi.Server):
    """cheroot's WSGI server: keep-alive connections, a fixed thread pool, no log output."""

    ConnectionClass = _Connection
    keep_alive_conn_limit = 1024  # idle keep-alive connections kept open (cheroot's default is 10)
    expiration_interval = 0.1  # the selector's wake-up period: stop() waits for up to one of these

    def __init__(self, port: int, app: Callable[..., Iterable[bytes]], on_accept: Callable[[], None]) -> None:
        super().__init__(("127.0.0.1", port), app, numthreads=THREADS, request_queue_size=128,
                         timeout=60, shutdown_timeout=5)
        self.on_accept = on_accept

    @classmethod
    def prepare_socket(cls, *args: Any, **kwargs: Any) -> socket.socket:
        """SO_REUSEADDR on the first (port 0) bind too: the restart's bind must not clash with TIME_WAIT."""
        sock: socket.socket = super().prepare_socket(*args, **kwargs)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """Silenced (clients dropping connections is normal here); cheroot writes to stderr by default."""


def _speed_up_moto() -> None:
    """Memoise ``method_names_from_class`` and give ``SecretsStore`` a by-name fast path (see the docstring)."""
    from moto.core import responses
    from moto.secretsmanager.models import SecretsStore

    original = responses.method_names_from_class  # type: ignore[attr-defined]
    if not hasattr(original, "cache_info"):
        responses.method_names_from_class = functools.cache(original)  # type: ignore[attr-defined]
    if getattr(SecretsStore, "_by_name_first", False):
        return
    scan_get, scan_contains, scan_item = SecretsStore.get, SecretsStore.__contains__, SecretsStore.__getitem__

    def get(self: Any, key: str) -> Any:
        return dict.get(self, key) if dict.__contains__(self, key) else scan_get(self, key)

    def contains(self: Any, key: str) -> bool:
        return dict.__contains__(self, key) or scan_contains(self, key)

    def item(self: Any, key: str) -> Any:
        return dict.__getitem__(self, key) if dict.__contains__(self, key) else scan_item(self, key)

    SecretsStore.get, SecretsStore.__contains__, SecretsStore.__getitem__ = get, contains, item  # type: ignore[method-assign]
    SecretsStore._by_name_first = True  # type: ignore[attr-defined]


class GatedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose requests pass a gate: delay, deny, fail, count."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.delay = 0.0
        self.deny: Rule | None = None
        self.fail: Rule | None = None
        self.throttle = 0  # the next N requests get ThrottlingException
        self.unpropagated: Counter[str] = Counter()  # access key id -> next N requests refused (IAM propagation)
        self.quotas: dict[str, float] = {}  # quota class -> requests/s enforced (see the module docstring)
        self.throttled: Counter[str] = Counter()  # quota class -> requests refused for exceeding it
        self._buckets: dict[str, tuple[float, float]] = {}  # quota class -> (tokens, last refill, monotonic)
        self.calls: Counter[str] = Counter()
        self.access_keys: Counter[str] = Counter()
        self.connections = 0  # TCP connections accepted since the last reset_counts()
        self.in_delay = self.max_in_delay = 0  # requests inside the injected delay now / at most at once
        self.cpu_since = time.process_time()  # CPU used by this process since the last reset_counts()
        self._count_lock = threading.Lock()
        self._token_lock = threading.Lock()  # PutSecretValue/UpdateSecret: token check + moto's write, atomic
        self._app: Any = None  # moto's DomainDispatcherApplication
        self._secretsmanager: Any = None  # moto's Secrets Manager app, created once
        self._cheroot: _Server | None = None
        self.running = False

    def start(self) -> None:
        """Serve on 127.0.0.1: a free port the first time, the same port after a stop()."""
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _speed_up_moto()
        if self._app is None:
            from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

            self._app = DomainDispatcherApplication(create_backend_app)
            self._secretsmanager = create_backend_app("secretsmanager")
        server = _Server(self._port, self._gate, self._accepted)
        ready, failed = threading.Event(), []

        def serve() -> None:  # in a daemon thread, so cheroot's worker threads are daemons too
            try:
                server.prepare()  # binds and starts the thread pool
            except BaseException as exc:  # handed to start()
                failed.append(exc)
                ready.set()
                return
            ready.set()
            server.serve()

        self._thread = threading.Thread(target=serve, name=f"moto-{self._port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        self._cheroot = server
        self._port = server.bind_addr[1]  # a restart binds the same port
        self.running = True

    def stop(self) -> None:
        """Stop serving: close the listening socket and every connection; clients get connection errors."""
        server, self._cheroot = self._cheroot, None
        if server is not None:
            server.stop()  # closes the socket and idle keep-alive connections, waits for requests in flight
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.running = False

    def get_host_and_port(self) -> tuple[str, int]:
        return self._ip_address, self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def relax(self) -> None:
        """Back to a plain, fast, honest server with a zero call count."""
        self.delay, self.deny, self.fail, self.throttle = 0.0, None, None, 0
        self.quotas = {}
        self.unpropagated.clear()
        self.reset_counts()

    def reset_counts(self) -> None:
        with self._count_lock:
            self.calls.clear()
            self.throttled.clear()
            self._buckets.clear()
            self.access_keys.clear()
            self.connections = 0
            self.cpu_since = time.process_time()

    def count(self, actions: Iterable[str] | None = None) -> int:
        with self._count_lock:
            return sum(n for a, n in self.calls.items() if actions is None or a in actions)

    def _over_quota(self, action: str) -> bool:
        """Take a token of ``action``'s quota class (under ``_count_lock``); True when there was none."""
        quota_class = QUOTA_CLASS.get(action)
        rate = self.quotas.get(quota_class or "")
        if quota_class is None or not rate:
            return False
        now = time.monotonic()
        tokens, last = self._buckets.get(quota_class, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[quota_class] = (tokens, now)
            self.throttled[quota_class] += 1
            return True
        self._buckets[quota_class] = (tokens - 1, now)
        return False

    def _accepted(self) -> None:
        with self._count_lock:
            self.connections += 1

    def _gate(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            body = environ["wsgi.input"].read(length)
        elif "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
            body = environ["wsgi.input"].read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]
        if not action and b"Action=" in body:  # query protocol (STS)
            action = urllib.parse.parse_qs(body.decode()).get("Action", [""])[0]
        action = action or str(environ.get("PATH_INFO", ""))
        try:
            request = json.loads(body) if body.startswith(b"{") else {}
        except ValueError:
            request = {}
        if str(action).startswith("/moto-api"):
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        if str(action).startswith("/_gate"):
            return self._control(str(action), request, start_response)
        key = str(environ.get("HTTP_AUTHORIZATION", "")).partition("Credential=")[2].partition("/")[0]
        with self._count_lock:
            self.calls[action] += 1
            self.access_keys[key] += 1
            throttled, self.throttle = self.throttle > 0, max(0, self.throttle - 1)
            throttled = self._over_quota(action) or throttled
            unpropagated = self.unpropagated[key] > 0
            if unpropagated:
                self.unpropagated[key] -= 1
        if throttled:
            return _error(start_response, "400 Bad Request", "ThrottlingException", "Rate exceeded")
        if unpropagated or _inactive_access_key(key):
            return _query_error(start_response, "403 Forbidden", "InvalidClientTokenId",
                                "The security token included in the request is invalid.")
        if self.delay:
            with self._count_lock:
                self.in_delay += 1
                self.max_in_delay = max(self.max_in_delay, self.in_delay)
            try:
                time.sleep(self.delay)
            finally:
                with self._count_lock:
                    self.in_delay -= 1
        if self.deny is not None and self.deny(action, request):
            return _error(start_response, "400 Bad Request", "AccessDeniedException",
                          f"User: arn:aws:iam::123456789012:user/rotator-test is not authorized to perform: "
                          f"secretsmanager:{action} on resource: {request.get('SecretId', '*')} because no "
                          "identity-based policy allows the action")
        if self.fail is not None and self.fail(action, request):
            return _error(start_response, "500 Internal Server Error", "InternalServiceError", "injected")
        return self._dispatch(action, request, environ, start_response)

    def _dispatch(self, action: str, request: dict[str, Any], environ: dict[str, Any],
                  start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Hand the request to moto: Secrets Manager straight to its app, the rest through the dispatcher."""
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("secretsmanager."):
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        if action not in TOKEN_WRITES:
            return self._secretsmanager(environ, start_response)  # type: ignore[no-any-return]
        with self._token_lock:  # the check and moto's write, atomic against other token writes
            refusal = _token_in_use(environ, request)
            if refusal is not None:
                return _error(start_response, "400 Bad Request", "ResourceExistsException", refusal)
            answer = self._secretsmanager(environ, start_response)
            try:
                return list(answer)  # moto's work is done inside the lock
            finally:
                if hasattr(answer, "close"):
                    answer.close()
                _precise_created_date(environ, request)

    def _control(self, path: str, request: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """``/_gate/calls``: counts, throttled requests by quota class and the server process's CPU time;
        ``/_gate/set``: set ``delay`` and ``quotas``, reset the counts."""
        if path == "/_gate/set":
            self.delay = float(request.get("delay", self.delay))
            self.quotas = {str(k): float(v) for k, v in request.get("quotas", self.quotas).items()}
            self.reset_counts()
        with self._count_lock:
            cpu = time.process_time() - self.cpu_since
            payload = json.dumps({"calls": dict(self.calls), "cpu_s": cpu, "connections": self.connections,
                                  "throttled": dict(self.throttled)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def reset_moto(self) -> None:
        """Forget every secret (POST /moto-api/reset)."""
        url = self.endpoint + "/moto-api/reset"
        req = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - fixed http://127.0.0.1 URL
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass


def _secret_of(environ: dict[str, Any], request: dict[str, Any]) -> Any:
    """moto's FakeSecret the request names (None if missing, a replica, or scheduled for deletion)."""
    from moto.iam.models import get_account_id_from
    from moto.secretsmanager.models import FakeSecret, secretsmanager_backends

    scope = str(environ.get("HTTP_AUTHORIZATION", "")).partition("Credential=")[2].split(",")[0].split("/")
    region = scope[2] if len(scope) > 2 and scope[2] else REGION
    # moto's order (BaseResponse.get_current_account): environment, header, then the access key
    account = (os.environ.get("MOTO_ACCOUNT_ID") or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
               or get_account_id_from(scope[0]))
    try:
        secret = secretsmanager_backends[account][region].secrets.get(str(request.get("SecretId", "")))
    except KeyError:  # unknown region or account: let moto answer
        return None
    if not isinstance(secret, FakeSecret) or secret.is_deleted():
        return None  # missing, a replica or scheduled for deletion: moto's errors
    return secret


def _precise_created_date(environ: dict[str, Any], request: dict[str, Any]) -> None:
    """Fidelity: AWS reports a version's CreatedDate to the millisecond; moto 5.2.5 stores ``int(time.time())``
    (``put_secret_value``), which makes a version look up to a second older than it is."""
    token = request.get("ClientRequestToken")
    secret = _secret_of(environ, request) if token else None
    version = secret.versions.get(token) if secret is not None else None
    if version and isinstance(version.get("createdate"), int):
        version["createdate"] = round(time.time(), 3)


def _token_in_use(environ: dict[str, Any], request: dict[str, Any]) -> str | None:
    """AWS's refusal message if the request's ClientRequestToken names a version holding another value."""
    token, value = request.get("ClientRequestToken"), (request.get("SecretString"), request.get("SecretBinary"))
    if not token or value == (None, None):
        return None  # nothing to compare: moto decides
    secret = _secret_of(environ, request)
    if secret is None:
        return None
    version = secret.versions.get(token)
    if not version:
        return None
    stored = (version.get("secret_string"), version.get("secret_binary"))
    if stored == (None, None) or stored == value:
        return None  # an empty version to fill, or an idempotent retry
    return (f"You can't use ClientRequestToken {token} because that value is already in use for a version of "
            f"secret {secret.arn}.")


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    payload = json.dumps({"__type": code, "message": message}).encode()
    start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload))),
                            ("x-amzn-RequestId", uuid.uuid4().hex)])
    return [payload]


def _inactive_access_key(key: str) -> bool:
    """Whether ``key`` is the id of an Inactive access key of a moto IAM user (AWS refuses those)."""
    if not key.startswith("AKIA"):
        return False
    from moto.iam.models import iam_backends

    for account in list(iam_backends):
        for partition in list(iam_backends[account]):
            for user in list(iam_backends[account][partition].users.values()):
                for access_key in user.access_keys:
                    if access_key.access_key_id == key:
                        return bool(access_key.status != "Active")
    return False


def _query_error(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    """An error as the query-protocol services (IAM, STS) send it."""
    payload = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
               f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))])
    return [payload]


def _user_resource(self: Any) -> str:
    """The ARN AWS evaluates an IAM user action against (moto 5.2.5 uses ``*`` for everything but roles)."""
    names = self.data.get("UserName") if isinstance(self.data, dict) else None
    if not names:
        return _ROLE_RESOURCE(self)  # type: ignore[no-any-return]
    name = names[0] if isinstance(names, list) else str(names)
    user = self.backend.users.get(name)
    return str(user.arn) if user is not None else f"arn:aws:iam::{self.current_account}:user/{name}"


_ROLE_RESOURCE: Any = None


@contextlib.contextmanager
def iam_authentication() -> Iterator[None]:
    """moto checks every request's signature and IAM policies (process-wide) inside the block.

    IAM user actions are evaluated against the user's ARN (path included), as AWS does, so a policy scoped to
    ``arn:aws:iam::*:user/<path>/*`` is really tested.
    """
    global _ROLE_RESOURCE
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.responses import IamResponse

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    _ROLE_RESOURCE = IamResponse._determine_resource
    IamResponse._determine_resource = _user_resource  # type: ignore[method-assign]
    settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = 0, 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved
        IamResponse._determine_resource = _ROLE_RESOURCE  # type: ignore[method-assign]


_SHARED: GatedMotoServer | None = None
_SHARED_LOCK = threading.Lock()


def shared_server() -> GatedMotoServer:
    """The process's moto server, started on first use and stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = GatedMotoServer()
            _SHARED.start()
            atexit.register(lambda: _SHARED.stop() if _SHARED is not None and _SHARED.running else None)
        elif not _SHARED.running:
            _SHARED.start()
        return _SHARED


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials and region for boto3, and no real AWS config files."""
    for key, value in DUMMY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(DUMMY_ENV)


@pytest.fixture
def moto(aws_env: dict[str, str]) -> Iterator[GatedMotoServer]:
    """The shared moto server, relaxed before and after the test (and restarted if a test stopped it)."""
    server = shared_server()
    server.relax()
    yield server
    server.relax()
    if not server.running:
        server.start()


if __name__ == "__main__":  # a gated moto server of its own (benchmarks): prints the endpoint, stops on EOF
    import sys

    logging.disable(logging.WARNING)
    served = GatedMotoServer()
    served.start()
    print(served.endpoint, flush=True)
    sys.stdin.read()
    served.stop()
