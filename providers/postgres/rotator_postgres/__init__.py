"""PostgreSQL target for rotator: SCRAM verifiers computed client-side; single and alternating strategies."""

from rotator_postgres.target import PostgresBindingOptions, PostgresConfig, PostgresTarget

__all__ = ["PostgresBindingOptions", "PostgresConfig", "PostgresTarget"]
