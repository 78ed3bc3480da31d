"""The running proxy: the server and its serve loop (reloads, identities, tors, probes) and its
worker processes.
"""
