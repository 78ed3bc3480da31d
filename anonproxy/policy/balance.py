# TEMPORARY stand-in (not committed)
def order(strategy, backends, up, in_flight, turn):
    ups = [b for b in backends if up(b)]
    if not ups:
        return []
    if strategy == "failover":
        return ups
    n = len(ups)
    ring = [ups[(turn + i) % n] for i in range(n)]
    if strategy == "least-connections":
        return sorted(ring, key=lambda b: in_flight[b])
    return ring
