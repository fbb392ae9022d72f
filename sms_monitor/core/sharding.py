"""Which replica polls which account: shard numbers, as kube-state-metrics divides objects.

``total_shards`` replicas each run with a ``shard`` number from 0 to ``total_shards - 1``;
an account belongs to shard ``fnv1a_64(account SID) % total_shards``. FNV-1a over the SID's
UTF-8 bytes is fixed by its definition (no seed, no ``PYTHONHASHSEED``, no library version):
every replica, every restart and every release puts an account on the same shard, and the
mixin's coverage alert can tell an account polled by two replicas or by none.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
MAX_TOTAL_SHARDS = 1024
_ORDINAL = re.compile(r"-(\d+)$")


def fnv1a_64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of ``data`` (Go's ``hash/fnv.New64a``)."""
    h = FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV64_PRIME) & _MASK64
    return h


def shard_of(key: str, total: int) -> int:
    """The shard that owns ``key`` (an account SID) among ``total``."""
    if total < 1:
        raise ValueError(f"total shards must be at least 1, got {total}")
    return fnv1a_64(key.encode()) % total


def ordinal(hostname: str) -> int | None:
    """A StatefulSet pod's ordinal: the trailing ``-<n>`` of its name (``sms-monitor-2``
    → 2), or None when the name has none."""
    found = _ORDINAL.search(hostname.strip())
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Sharding:
    """This replica's shard of ``total``; ``Sharding()`` is one replica owning everything."""

    shard: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.total <= MAX_TOTAL_SHARDS:
            raise ValueError(f"total shards must be from 1 to {MAX_TOTAL_SHARDS}, got {self.total}")
        if not 0 <= self.shard < self.total:
            raise ValueError(f"shard must be from 0 to {self.total - 1}, got {self.shard}")

    @property
    def sharded(self) -> bool:
        return self.total > 1

    @property
    def shared(self) -> bool:
        """Whether this replica also does what belongs to no account (the application
        database's alerts): shard 0."""
        return self.shard == 0

    def owns(self, sid: str) -> bool:
        return shard_of(sid, self.total) == self.shard

    def split(self, sids: Iterable[str]) -> tuple[list[str], list[str]]:
        """``sids`` as (owned, skipped), each in the given order."""
        owned: list[str] = []
        skipped: list[str] = []
        for sid in sids:
            (owned if self.owns(sid) else skipped).append(sid)
        return owned, skipped

    def lock_key(self, base: int) -> int:
        """The alert leader's advisory-lock key for this shard: ``base`` unsharded, else one
        key per (total, shard), so each shard has a leader of its own (replicas of one shard
        share it) and fits PostgreSQL's signed 64-bit key."""
        if not self.sharded:
            return base
        return base + (self.total << 48) + ((self.shard + 1) << 36)


def coverage(sids: Sequence[str], shards: Iterable[Sharding]) -> dict[str, int]:
    """How many of the running replicas ``shards`` own each account: 1 everywhere when the
    fleet is whole (the mixin alerts on anything else)."""
    running = list(shards)
    return {sid: sum(1 for s in running if s.owns(sid)) for sid in sids}


@dataclass(frozen=True)
class ShardPlan:
    """What one replica polls: its shard, and the configured accounts (by name, the
    ``account`` label) it owns and skips."""

    sharding: Sharding = Sharding()
    owned: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @classmethod
    def of(cls, sharding: Sharding, accounts: Sequence[tuple[str, str]]) -> ShardPlan:
        """The plan for ``accounts``, (name, SID) pairs in configured order."""
        owned = tuple(name for name, sid in accounts if sharding.owns(sid))
        return cls(sharding, owned, tuple(name for name, _ in accounts if name not in owned))
