"""Moving bytes: tunnels (relay and splice), plain-HTTP exchanges on upstream connections,
the pool of idle upstream connections, and per-connection deadlines.
"""
