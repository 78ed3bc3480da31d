"""The usual cache hit, answered without hishel: one stored response for the URL and method, no
Vary and no no-cache in it, a request with no Cache-Control and no validators or Range of its
own, younger than its freshness lifetime. What decides it (the stored response's Date, its
freshness lifetime for a shared cache, and whether nothing but its age decides its reuse) is
computed by rfc.py with hishel's own functions, once per stored fields, and kept on the entry
(`Stored.fresh`); this module only reads it, so a hit needs neither hishel nor its import.

Invariant: `usual_hit` answers a Hit only where rfc.lookup answers that same Hit (the same entry,
the same Age); everything else is None, and rfc.lookup decides (tests/test_cache_rfc.py holds
the two to the same answers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anonproxy.cache.rfc import Fields, Stored

# request fields that take a request off the usual path: its own Cache-Control (hishel and the
# request's max-age decide), or validators and Range (the client's own copy: passed through)
ASKING = frozenset({b"cache-control", b"if-none-match", b"if-modified-since", b"if-match",
                    b"if-unmodified-since", b"if-range", b"range"})
_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}  # (as hishel and Stored spell them)


class Hit:
    """Answer from `stored`, with this Age (its fields are those stored, Age replaced)."""

    __slots__ = ("stored", "age")

    def __init__(self, stored: Stored, age: bytes) -> None:
        # (a plain class, not a dataclass: compiled, a dataclass needs its fields' types at
        # run time, and Stored is imported for type checking only, hishel with it)
        self.stored = stored
        self.age = age


def usual_hit(method: bytes, url: str, fields: Fields, stored: Sequence[Stored]) -> Hit | None:
    """The Hit rfc.lookup would answer, when the request and what is stored take the usual path
    and the stored response's freshness is already known (`Stored.fresh`: its Date, freshness
    lifetime and whether only age decides, as rfc.py computes them); its Age as hishel's
    get_age counts it. Else None: ask rfc.lookup."""
    if len(stored) != 1:
        return None
    one = stored[0]
    known = one.fresh
    if known is None or known[0] is not one.fields:  # (not yet computed for these fields)
        return None
    _, date, lifetime, plain = known
    if not plain or lifetime is None or one.url != url or one.method != (
            _METHODS.get(method) or method.decode("latin-1").upper()):
        return None
    for name, _ in fields:
        if name.lower() in ASKING:
            return None
    age = 0 if date is None else int(max(0, time.time() - date))
    return Hit(one, b"%d" % age) if age < lifetime else None
