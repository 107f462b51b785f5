"""HashiCorp Vault KV v2 provider for rotator: one KV document per keyset, every step one CAS write."""

from rotator_vault.auth import AppRoleAuth, AuthConfig, KubernetesAuth, TokenAuth
from rotator_vault.provider import VaultConfig, VaultProvider

__all__ = ["AppRoleAuth", "AuthConfig", "KubernetesAuth", "TokenAuth", "VaultConfig", "VaultProvider"]
