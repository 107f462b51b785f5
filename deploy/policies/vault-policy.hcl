# rotator: least-privilege Vault policy for the KV v2 provider (providers/vault).
#
# Written for `mount: secret` and an empty `path_prefix`. With a prefix, e.g. `path_prefix: rotator`,
# replace "secret/data/*" by "secret/data/rotator/*", "secret/metadata/*" by "secret/metadata/rotator/*"
# and "secret/metadata/" by "secret/metadata/rotator/".
#
# Exactly the requests the provider makes:
#   read a keyset          GET   secret/data/<path>                 read
#   create / every step    POST  secret/data/<path> (options.cas)   create (first write), update
#   max_versions + mirror  PATCH secret/metadata/<path>             patch  (custom_metadata, best effort)
#   list keysets           LIST  secret/metadata/<prefix>/...       list
#   token upkeep           auth/token/lookup-self, renew-self       (also in Vault's default policy)
# No delete, destroy or sudo: old KV versions are pruned by max_versions, never deleted by rotator.

path "secret/data/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/*" {
  capabilities = ["patch", "list"]
}

path "secret/metadata/" {
  capabilities = ["list"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
