"""What the example command-target scripts share: read the request, call the key service, exit per protocol.

Exit 75 when the service cannot be reached, 77 when it refuses the admin token (see rotator/command_target.py).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

EX_TEMPFAIL, EX_NOPERM = 75, 77


def request() -> dict[str, Any]:
    """The JSON request rotator wrote to stdin."""
    return dict(json.load(sys.stdin))


def call(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body or None); exits 75 when the service is down, 77 on 401 with the admin."""
    url = os.environ["KEY_SERVICE_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={  # noqa: S310 - URL from the test
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        sys.exit(EX_TEMPFAIL)


def admin_call(method: str, path: str, req: dict[str, Any], body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, answer = call(method, path, str(req["admin"]["token"]), body)
    if status == 401:
        sys.exit(EX_NOPERM)
    return status, answer
