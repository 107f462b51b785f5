# Consumers of rotator-managed secrets: read the KV v2 document only.
#
# A simple client reads the "current" field; a verifier also accepts "previous" (grace period) and
# "pending" (about to be promoted). Narrow the path to the secrets an application needs, e.g.
# "secret/data/apps/payments/*". Written for `mount: secret`; no metadata, list or write access.

path "secret/data/*" {
  capabilities = ["read"]
}
