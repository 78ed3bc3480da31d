"""The shipped profiles, as package data: `default.toml` (what `serve` uses when no profile is
named) and `direct.toml`.

No code lives here. config/profiles.py finds this folder with importlib.resources, so an
installed wheel finds its profiles from any working directory; a profile of the same name in
the user's folder (~/.config/anonproxy) is found first.
"""
