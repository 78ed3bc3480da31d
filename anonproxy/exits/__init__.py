"""Ways out: one module per kind of exit (direct, chain, pool, tor) behind one protocol
(base.py) and a registry of them (registry.py); opening a stream through the one a decision
names (dialer.py); their health; the tors we run or attach to (tor_process.py); and the
per-profile context that routes and dials.
"""
