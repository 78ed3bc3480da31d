"""The cache: RFC 9111 decisions (rfc.py, hishel's state machine) and an in-memory store bounded
by bytes, partitioned so that no identity is served what another fetched (store.py)."""
