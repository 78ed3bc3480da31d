"""The command line: argument parsing and one module per command or concern (serve, fetch,
exec and its confinement, remote control of a running proxy, route explanations, progress bars).
"""
