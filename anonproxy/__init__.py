"""anonproxy: a local privacy proxy that strips what identifies you and routes each destination
through the exit its profile's rules call for."""

# First: it decides whether the hot path's modules run compiled or from their sources.
from anonproxy import native as _native  # noqa: F401

__version__ = "0.1.0"
