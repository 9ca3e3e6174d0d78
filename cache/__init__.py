"""Turnout's response cache: keys, policy, entries, backends and coalescing (no web framework)."""

from cache.backends import CacheUnavailable, Locks, Store
from cache.coalesce import Broadcast, Flight, Lease, ReplicaLock
from cache.entry import Entry, EntryError, decode_entry, encode_entry, replay_chunks
from cache.health import Breaker
from cache.keys import canonical_form, key_for, scope_of
from cache.memory import MemoryStore
from cache.policy import Decision, decide
from cache.recorder import StreamRecorder
from cache.redis_store import RedisStore

__all__ = [
    "Breaker",
    "Broadcast",
    "CacheUnavailable",
    "Decision",
    "Entry",
    "EntryError",
    "Flight",
    "Lease",
    "Locks",
    "MemoryStore",
    "RedisStore",
    "ReplicaLock",
    "Store",
    "StreamRecorder",
    "canonical_form",
    "decide",
    "decode_entry",
    "encode_entry",
    "key_for",
    "replay_chunks",
    "scope_of",
]
