"""reverse entries: backends, balancing, onion publication."""
