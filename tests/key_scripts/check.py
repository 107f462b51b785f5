"""command target `check`: the admin token works (listing keys of nobody)."""

from _client import admin_call, request

admin_call("GET", "/v1/keys?username=-", request())
