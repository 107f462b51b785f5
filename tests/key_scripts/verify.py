"""command target `verify`: call /v1/whoami with the key; exit 0 only if it answers as the right user."""

import sys

from _client import call, request

req = request()
status, me = call("GET", "/v1/whoami", req["credential"]["api_key"])
sys.exit(0 if status == 200 and me["username"] == req["username"] else 1)
