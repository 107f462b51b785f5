"""rotator's Redis ACL target (type ``redis``): per-user passwords as SHA-256 hashes, three strategies."""

from rotator_redis.config import RedisTargetConfig, TlsConfig
from rotator_redis.target import RedisTarget

__all__ = ["RedisTarget", "RedisTargetConfig", "TlsConfig"]
