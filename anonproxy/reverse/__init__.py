"""Reverse entries ([[reverse]]): a listener in front of local backends that balances,
authenticates, terminates TLS, caches and hides the backends, and publishes itself as an onion
service through a managed tor."""
