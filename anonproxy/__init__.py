"""anonproxy: a local privacy proxy that strips what identifies you and routes each destination
through the exit its profile's rules call for."""

__version__ = "0.1.0"
