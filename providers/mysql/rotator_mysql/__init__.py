"""MySQL / MariaDB target for rotator: single, alternating (one role for both accounts) and MySQL 8 dual."""

from rotator_mysql.target import MysqlBindingOptions, MysqlConfig, MysqlTarget

__all__ = ["MysqlBindingOptions", "MysqlConfig", "MysqlTarget"]
