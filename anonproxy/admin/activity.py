"""What the proxy has been doing, for the dashboard: recent connections, bytes per exit, and
what the block lists blocked (a count per list, the latest matches), and the requests seen
inside opened HTTPS connections per site (a count; no more than 1,000 sites).

Fed by `logs.observers` with one Record per finished tunnel or plain-HTTP request. Traffic
through a pool counts for the pool and for the member that carried it; a reverse entry's
requests are listed but count for no exit (the entry counts them per backend). Holds the
site (host:port), the exit, the outcome and byte counts — never a path, query or body. Recent
entries are bounded by number and by age; byte totals per exit are kept for the life of the
process (or until cleared), and `sample()` turns them into a short time series for the chart.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from anonproxy.logs import Record


@dataclass(slots=True)
class ExitTotals:
    up: int = 0
    down: int = 0
    connections: int = 0
    errors: int = 0


@dataclass
class Activity:
    max_entries: int = 500
    max_age: float = 600.0  # seconds an entry stays in the recent list
    series_length: int = 120  # chart points kept (one per sample)
    recent: deque = field(init=False)
    exits: dict[str, ExitTotals] = field(default_factory=dict)
    series: deque = field(init=False)
    finished: int = 0  # connections and requests recorded since start (not reset by clear)
    blocks: dict[str, int] = field(default_factory=dict)  # blocked requests per list
    max_matches: int = 50
    matches: deque = field(init=False)  # (time, list, rule, site), the latest last
    opened: dict[str, int] = field(default_factory=dict)  # requests inside opened HTTPS, by site
    _sampled: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.max_entries)
        self.series = deque(maxlen=self.series_length)
        self.matches = deque(maxlen=self.max_matches)

    def observe(self, record: Record) -> None:
        """(logs observer) One finished connection or request. This runs once per request:
        the record is kept as it is and turned into a dashboard entry only when read."""
        self.finished += 1
        now = time.time()
        if record.blocked is not None:
            name, rule = record.blocked
            self.blocks[name] = self.blocks.get(name, 0) + 1
            self.matches.append((now, name, rule, _site(record.dest)))
        if record.proto == "https":  # a request inside an opened HTTPS connection
            site = _site(record.dest)
            if site in self.opened or len(self.opened) < 1000:
                self.opened[site] = self.opened.get(site, 0) + 1
        elif record.proto == "reverse":  # a visitor of a reverse entry: listed, and its bytes
            self.recent.append((now, record))  # are the entry's (its backends'), no exit's
            return
        # through a pool, the record names the path ("pool>member"): each exit on it carried
        # the traffic, so the pool and the member it used both count it
        path = record.exit
        for name in dict.fromkeys(path.split(">")) if ">" in path else (path,):
            totals = self.exits.get(name)
            if totals is None:
                totals = self.exits[name] = ExitTotals()
            totals.up += record.up
            totals.down += record.down
            totals.connections += 1
            totals.errors += record.error is not None  # the proxy's own, not a site's 4xx
        self.recent.append((now, record))

    def entries(self, now: float | None = None) -> list[dict]:
        """Recent connections, newest first, dropping those older than max_age."""
        now = time.time() if now is None else now
        while self.recent and now - self.recent[0][0] > self.max_age:
            self.recent.popleft()
        return [{"time": at, "proto": r.proto, "site": _site(r.dest), "exit": r.exit,
                 "status": str(r.status), "error": r.error, "up": r.up, "down": r.down,
                 "ms": round(r.seconds * 1000)}
                for at, r in reversed(self.recent)]

    def latest_matches(self) -> list[dict]:
        """What the block lists blocked last, newest first (the site and rule, never a path)."""
        keys = ("time", "list", "rule", "site")
        return [dict(zip(keys, match, strict=True)) for match in reversed(self.matches)]

    def clear(self) -> None:
        self.recent.clear()

    def sample(self, now: float | None = None) -> dict:
        """Bytes per exit since the previous sample; appended to the chart's series."""
        exits: dict[str, dict[str, int]] = {}
        point = {"time": time.time() if now is None else now, "exits": exits}
        for name, totals in self.exits.items():
            up0, down0 = self._sampled.get(name, (0, 0))
            exits[name] = {"up": totals.up - up0, "down": totals.down - down0}
            self._sampled[name] = (totals.up, totals.down)
        self.series.append(point)
        return point


def _site(dest: object) -> str:
    """host:port of an Address; "-" for a request that never named a destination."""
    host = getattr(dest, "host", None)
    if host is None:
        return "-"
    port = getattr(dest, "port", None)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

