"""Ways out: the exit plans and how a stream is opened through each (direct, a chain of hops,
a pool, a tor), their health, the tors we run or attach to, and the per-profile context that
routes and dials.
"""
