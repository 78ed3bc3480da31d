# TEMPORARY stand-in (not committed)
from __future__ import annotations
from typing import Literal
from pydantic import BaseModel, ConfigDict
from anonproxy.wire.address import Address, parse_authority

class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

class ReverseTls(_S):
    cert: str
    key: str

class ReverseAuth(_S):
    username: str
    password: str

class ReverseHealth(_S):
    path: str

class Onion(_S):
    key: str
    tor: str
    clients: list[str] = []
    max_streams: int | None = None

class Reverse(_S):
    listen: str
    backends: list[str]
    strategy: Literal["round-robin", "least-connections", "failover"] = "round-robin"
    hosts: list[str] | None = None
    tls: ReverseTls | None = None
    auth: ReverseAuth | None = None
    health: ReverseHealth | None = None
    cache: bool = False
    forwarded: bool = False
    onion: Onion | None = None

    @property
    def listen_address(self) -> Address:
        return parse_authority(self.listen, listening=True)

    @property
    def backend_addresses(self) -> list[Address]:
        return [parse_authority(b.removeprefix("http://")) for b in self.backends]
