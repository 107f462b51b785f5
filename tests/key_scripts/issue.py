"""command target `issue`: delete the user's keys rotator does not keep, create one, print it as JSON."""

import json
import sys

from _client import admin_call, request

req = request()
user, keep = req["username"], {k.get("id") for k in req["keep"]}
status, listing = admin_call("GET", f"/v1/keys?username={user}", req)
for key in listing["keys"]:
    if key["id"] not in keep:  # a leftover of an interrupted rotation: nobody holds its secret
        admin_call("DELETE", f"/v1/keys/{key['id']}", req)
status, created = admin_call("POST", "/v1/keys", req, {"username": user})
if status != 201:
    sys.exit(1)
print(json.dumps({"id": created["id"], "username": user, "api_key": created["api_key"]}))
