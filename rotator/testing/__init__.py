"""Test helpers for rotator and for users' own tests.

- :class:`rotator.testing.memory.MemoryProvider`: an in-process provider (type ``memory``).
- :class:`rotator.testing.clock.FakeClock`: a clock that moves only when told to.
- :class:`rotator.testing.contract.ProviderContract`: the behaviour every provider must show; subclass it in a
  provider's test module (imports pytest, so it is not re-exported here).
"""

from rotator.testing.clock import FakeClock
from rotator.testing.memory import MemoryConfig, MemoryProvider

__all__ = ["FakeClock", "MemoryConfig", "MemoryProvider"]
