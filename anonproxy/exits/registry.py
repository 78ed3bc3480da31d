"""The kinds of exit, by the profile key that selects each: a plain dict, not a plugin system.

An `[exits.NAME]` table names its kind by one key (config/models.py, `Exit`, keeps the keys
exclusive): `via`, a chain of proxy hops; `pool`, other exits; `tor`, a tor. With none of them
the exit is direct. Each kind's module has `plan(name, exit_)`, which builds its Plan
(base.py); adding a kind is its module, one line here, and its key in `Exit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from anonproxy.exits import chain, direct, pool, tor
from anonproxy.exits.base import Plan

if TYPE_CHECKING:
    from anonproxy.config.models import Exit as ExitConfig


class Kind(Protocol):
    """What registry needs of a kind's module."""

    def plan(self, name: str, exit_: ExitConfig) -> Plan: ...


KINDS: dict[str, Kind] = {"via": chain, "pool": pool, "tor": tor}
DEFAULT: Kind = direct  # an exit with none of the keys above


def plan_from_config(name: str, exit_: ExitConfig) -> Plan:
    """The plan for exit `name`, by the kind its table's key selects."""
    kind = next((k for key, k in KINDS.items() if getattr(exit_, key, None) is not None), DEFAULT)
    return kind.plan(name, exit_)


def kinds() -> tuple[Kind, ...]:
    """Every registered kind's module, the default (direct) first."""
    return (DEFAULT, *KINDS.values())
