"""Stored responses in memory, bounded by bytes, least recently used dropped first, and
partitioned: an entry is found only under the partition it was stored in (the exit and its
isolation, the profile, the top-level site: policy/cache_partition.py), so no identity is ever
answered with what another fetched, and the timing of a hit tells nothing across them.

Invariants: the bytes held never exceed `max_bytes`; no entry is larger than
`max_object_bytes`; every entry is reachable from exactly one (partition, URL) key; `clear()`
empties it at once (a new identity, `anonproxy cache clear`).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (rfc.py imports hishel: only a proxy with the cache on pays for it)
    from anonproxy.cache.rfc import Fields, Stored

Partition = tuple[str, ...]
Key = tuple[Partition, str]


class MemoryCache:
    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes, self.max_object_bytes = max_bytes, max_object_bytes
        self._by_key: dict[Key, list[Stored]] = {}
        self._lru: OrderedDict[uuid.UUID, tuple[Key, Stored]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.revalidations = 0

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, partition: Partition, url: str) -> list[Stored]:
        """The stored variants of `url` in `partition` (Vary picks among them)."""
        return list(self._by_key.get((partition, url), ()))

    def peek(self, partition: Partition, url: str) -> Sequence[Stored]:
        """As `get`, not copied: to read at once, never to keep (a later put or drop of the
        URL's variants changes it)."""
        return self._by_key.get((partition, url), ())

    def used(self, stored: Stored) -> None:
        """`stored` answered a request: it is the most recently used now."""
        try:
            self._lru.move_to_end(stored.id)
        except KeyError:
            pass  # (gone meanwhile)

    def put(self, partition: Partition, stored: Stored) -> bool:
        """Store `stored` (False when it is larger than an object may be)."""
        size = stored.size
        if size > self.max_object_bytes or size > self.max_bytes:
            return False
        key = (partition, stored.url)
        self._by_key.setdefault(key, []).append(stored)
        self._lru[stored.id] = (key, stored)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._lru)))
        return True

    def refresh(self, partition: Partition, url: str, entry: uuid.UUID,
                fields: Fields) -> Stored | None:
        """A 304 freshened `entry`: its fields are now `fields`; the entry, or None if it went
        meanwhile."""
        found = self._lru.get(entry)
        if found is None or found[0] != (partition, url):
            return None
        stored = found[1]
        self.bytes -= stored.size
        stored.fields = fields
        self.bytes += stored.size
        self._lru.move_to_end(entry)
        if stored.size > self.max_object_bytes or stored.size > self.max_bytes:
            self._remove(entry)  # grown past what may be kept (it still answers this once)
            return None
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._lru)))  # (never `entry`: it is the most recent)
        return stored

    def drop(self, entries: list[uuid.UUID]) -> None:
        for entry in entries:
            if entry in self._lru:
                self._remove(entry)

    def clear(self) -> None:
        self._by_key.clear()
        self._lru.clear()
        self.bytes = 0

    def _remove(self, entry: uuid.UUID) -> None:
        key, stored = self._lru.pop(entry)
        variants = self._by_key[key]
        variants.remove(stored)
        if not variants:
            del self._by_key[key]
        self.bytes -= stored.size

    def snapshot(self) -> dict:
        """Entries, bytes and the hit ratio, for the dashboard and `status`."""
        asked = self.hits + self.misses
        return {"entries": len(self._lru), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "revalidations": self.revalidations,
                "hit_ratio": round(self.hits / asked, 3) if asked else None}
