"""command target `revoke`: delete the key; a key that is already gone is revoked too (exit 0)."""

import sys

from _client import admin_call, request

req = request()
status, _ = admin_call("DELETE", f"/v1/keys/{req['credential']['id']}", req)
sys.exit(0 if status in (204, 404) else 1)
