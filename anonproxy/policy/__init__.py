"""Decisions (pure): routing rules and their index, registrable sites, GeoIP lookups, pool
member order, and what counts as one of our own services.
"""
