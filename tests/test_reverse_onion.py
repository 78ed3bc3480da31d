"""A reverse entry published as an onion service (reverse/onion.py) through a managed tor on the
private Tor network (tests/tornet.py), reached by the network's own client tor over SOCKS5 by
its .onion name: published, the key file 0600 in a 0700 folder, the same address from the same
key file after the tor restarts, client authorization, and key files that are refused.

The client tor's SocksPort has ExtendedErrors, so a refusal says why in the SOCKS reply
(0xF4: the service wants client authorization this client lacks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import tornet as tornet_module
from aiohttp import web
from stem import Signal
from wsecho import start_app

from anonproxy import logs
from anonproxy.exits.tor_control import Control, OnionError
from anonproxy.exits.tor_process import Tor, TorSpec
from anonproxy.reverse.onion import (
    OnionKeyError,
    OnionService,
    OnionSettings,
    read_key,
    write_key,
)
from anonproxy.wire.address import Address

MISSING_CLIENT_AUTH = 0xF4
ANSWER = b"answered by the origin behind the onion"


@dataclass
class ClientTor:
    socks: tuple[str, int]
    controller: object  # stem Controller
    auth_dir: Path


@pytest.fixture(scope="module")
def client_tor(tornet, tmp_path_factory):
    """The network's client tor, with a ClientOnionAuthDir and SOCKS extended errors."""
    from stem.control import Controller

    data = tmp_path_factory.mktemp("onion-client")
    data.chmod(0o700)
    auth_dir = data / "auth"
    auth_dir.mkdir(mode=0o700)
    socks, control = tornet_module._free_port("127.0.0.1"), tornet_module._free_port("127.0.0.1")
    (data / "torrc").write_text("\n".join([
        f"DataDirectory {data}", f"SocksPort 127.0.0.1:{socks} ExtendedErrors",
        f"ControlPort 127.0.0.1:{control}", "CookieAuthentication 1", "RunAsDaemon 0",
        f"Log notice file {data / 'notice.log'}", f"ClientOnionAuthDir {auth_dir}",
        f"%include {tornet.client_torrc}"]) + "\n")
    process = tornet_module._spawn_tor(data / "torrc", data / "stdout.log")
    try:
        started = time.monotonic()
        while True:  # (stem leaks its socket when nothing listens yet: ask first)
            try:
                socket.create_connection(("127.0.0.1", control), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() - started > 20:
                    raise
                time.sleep(0.1)
        with Controller.from_port("127.0.0.1", control) as controller:
            controller.authenticate()
            tornet_module.wait_client_ready(controller, tornet)
            yield ClientTor(("127.0.0.1", socks), controller, auth_dir)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def origin():
    """A real aiohttp origin on loopback, port >= 1024."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=ANSWER)

    app = web.Application()
    app.router.add_get("/", hello)
    runner, port = await start_app(app)
    assert port >= 1024
    yield Address("127.0.0.1", port)
    await runner.cleanup()


@pytest.fixture
def log_lines():
    """What anonproxy logs (INFO and up) during the test."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    level = logs.log.level
    logs.log.addHandler(handler)
    logs.log.setLevel(logging.INFO)
    yield lines
    logs.log.removeHandler(handler)
    logs.log.setLevel(level)


@contextlib.asynccontextmanager
async def managed_tor(tornet, timeout: float = 90):
    """A managed tor (exits/tor_process.py) joining the test network, as a tor exit's would."""
    tor = Tor(TorSpec("managed", torrc=str(tornet.client_torrc)))
    task = asyncio.create_task(tor.run())
    try:
        started = time.monotonic()
        while not tor.ready:
            assert not task.done() and time.monotonic() - started < timeout, (tor.state, tor.error)
            await asyncio.sleep(0.1)
        print(f"managed tor ready in {time.monotonic() - started:.1f} s")
        yield tor
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def socks_get(socks: tuple[str, int], onion: str, user: str) -> tuple[int, bytes]:
    """GET / from `onion` port 80 through tor's SOCKS5 (the name resolved by tor): the SOCKS
    reply code, and the response when it is 0."""
    reader, writer = await asyncio.open_connection(*socks)
    try:
        writer.write(b"\x05\x01\x02")  # username/password: its own circuits (IsolateSOCKSAuth)
        assert await reader.readexactly(2) == b"\x05\x02"
        writer.write(b"\x01" + bytes([len(user)]) + user.encode() + b"\x01x")
        assert (await reader.readexactly(2))[1] == 0
        name = onion.encode()
        writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + (80).to_bytes(2, "big"))
        head = await reader.readexactly(4)
        if head[1] != 0:
            return head[1], b""
        await reader.readexactly({1: 6, 4: 18}[head[3]])
        writer.write(b"GET / HTTP/1.0\r\nHost: " + name + b"\r\n\r\n")
        return 0, await reader.read()
    finally:
        writer.close()


async def reach(client: ClientTor, onion: str, timeout: float = 90) -> tuple[int, bytes, float]:
    """Try until the origin answers through the onion or `timeout` passes (a fresh descriptor
    may not be on the directory the client asks yet); the last reply code and response, and
    the seconds it took."""
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        async with asyncio.timeout(30):
            code, response = await socks_get(client.socks, onion, f"try{tries}-{time.time()}")
        if code == 0 or code == MISSING_CLIENT_AUTH or time.monotonic() - started > timeout:
            return code, response, time.monotonic() - started
        await asyncio.sleep(1)


def x25519_pair() -> tuple[str, str]:
    """A client authorization pair as tor writes them: (public, private), base32 unpadded."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return (base64.b32encode(public).decode().rstrip("="),
            base64.b32encode(private).decode().rstrip("="))


@pytest.mark.tor
@pytest.mark.slow
async def test_published_reached_by_name_and_the_same_address_after_tor_restarts(
        tornet, client_tor, origin, tmp_path, monkeypatch, log_lines):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    key_file = tmp_path / "keys" / "app.onion-key"  # its folder does not exist yet
    service = OnionService(OnionSettings(key_file, timeout=60), "app")
    async with managed_tor(tornet) as tor:
        ready = time.monotonic()
        keeper = asyncio.create_task(service.keep(tor, origin, 80, poll=0.2))
        try:
            while not service.published:
                assert not keeper.done() and time.monotonic() - ready < 90, service.status()
                await asyncio.sleep(0.1)
            published = time.monotonic() - ready
            address = service.address
            assert address and address.endswith(".onion") and len(address) == 62
            assert service.status() == {"address": address, "published": True, "clients": 0,
                                        "error": None}
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(key_file.parent.stat().st_mode) & 0o077 == 0
            assert read_key(key_file).startswith("ED25519-V3:")
            code, response, took = await reach(client_tor, address)
            assert code == 0 and response.startswith(b"HTTP/1.") and ANSWER in response, code
            print(f"published {published:.1f} s after ready, reached in {took:.1f} s")

            os.kill(tor._process.pid, 9)  # a new tor process on the same data directory
            killed = time.monotonic()
            while service.published:  # (keep notices within its poll)
                assert time.monotonic() - killed < 10, service.status()
                await asyncio.sleep(0.05)
            while not service.published:
                assert not keeper.done() and time.monotonic() - killed < 120, service.status()
                await asyncio.sleep(0.1)
            print(f"published again {time.monotonic() - killed:.1f} s after the kill")
            assert service.address == address
            # A client that fetched the old descriptor keeps trying its intro points for a
            # while (shared/TOR-TESTNET.md): this one forgets it, as a new client would be.
            client_tor.controller.signal(Signal.NEWNYM)
            code, response, took = await reach(client_tor, address, timeout=120)
            print(f"reached again in {took:.1f} s")
            assert code == 0 and ANSWER in response, code
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        assert not service.published
    assert any(line.startswith(f"onion service {address} published for app")
               for line in log_lines), log_lines


@pytest.mark.tor
@pytest.mark.slow
async def test_client_authorization_lets_in_only_a_client_with_the_private_key(
        tornet, client_tor, origin, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    public, private = x25519_pair()
    other_public, _ = x25519_pair()
    settings = OnionSettings(tmp_path / "auth.onion-key", clients=(other_public, public),
                             max_streams=10, timeout=60)
    service = OnionService(settings, "private app")
    async with managed_tor(tornet) as tor:
        started = time.monotonic()
        address = await service.publish(tor.controller, origin, 80)
        print(f"published in {time.monotonic() - started:.1f} s")
        assert service.status()["clients"] == 2
        code, _, _ = await reach(client_tor, address)
        assert code == MISSING_CLIENT_AUTH
        (client_tor.auth_dir / "app.auth_private").write_text(
            f"{address.removesuffix('.onion')}:descriptor:x25519:{private}\n")
        client_tor.controller.signal(Signal.RELOAD)  # tor reads ClientOnionAuthDir again
        client_tor.controller.signal(Signal.NEWNYM)  # forgets the descriptor it could not read
        code, response, took = await reach(client_tor, address)
        print(f"reached with the key in {took:.1f} s")
        assert code == 0 and ANSWER in response, code

        twin = OnionService(settings, "its twin")  # the same key on the same tor: refused
        with pytest.raises(OnionError, match=r"tor refused the onion service: .*collision"):
            await twin.publish(tor.controller, origin, 80)
        assert twin.status()["error"].startswith("tor refused") and service.published
        await service.withdraw()
        assert not service.published


class NoControl:
    """A control connection that must not be used (the key file is refused first)."""

    def __getattr__(self, name):
        raise AssertionError(f"tor was asked ({name}) although the key file is refused")


async def test_a_key_file_others_can_read_is_refused_naming_it(tmp_path):
    path = tmp_path / "app.onion-key"
    path.write_text("ED25519-V3:" + base64.b64encode(bytes(64)).decode() + "\n")
    path.chmod(0o644)
    service = OnionService(OnionSettings(path))
    with pytest.raises(OnionKeyError, match=f"{path}: mode 0644 lets other accounts read the "
                       "onion service key, so it may have been copied"):
        await service.publish(NoControl(), Address("127.0.0.1", 8080), 80)
    assert service.status()["error"].startswith(str(path))
    assert path.read_text().startswith("ED25519-V3:")  # not repaired, not replaced


async def test_a_key_file_that_holds_no_key_or_is_a_link_is_refused_naming_it(tmp_path):
    path = tmp_path / "app.onion-key"
    for text in ("not a key\n", "ED25519-V3:" + base64.b64encode(bytes(32)).decode(),
                 "RSA1024:" + base64.b64encode(bytes(64)).decode()):
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(OnionKeyError, match=f"{path}: not an onion service key") as refused:
            read_key(path)
        assert text.strip() not in str(refused.value)
    path.unlink()
    real = tmp_path / "real"
    real.write_text("ED25519-V3:" + base64.b64encode(bytes(64)).decode())
    real.chmod(0o600)
    path.symlink_to(real)
    with pytest.raises(OnionKeyError, match="symbolic link"):
        read_key(path)
    assert read_key(tmp_path / "absent") is None


def test_a_new_key_is_written_0600_in_a_0700_folder_and_never_over_a_file(tmp_path):
    key = "ED25519-V3:" + base64.b64encode(bytes(range(64))).decode()
    path = tmp_path / "new" / "folder" / "app.onion-key"
    write_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert read_key(path) == key
    with pytest.raises(OnionKeyError, match=f"{path}: appeared while the service was being "
                       "published; kept as it is"):
        write_key(path, "ED25519-V3:" + base64.b64encode(bytes(64)).decode())
    assert read_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["app.onion-key"]  # no temporary left


class SlowControl:
    """A control connection whose ADD_ONION answers when released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Event()  # ADD_ONION has been sent and waits for its answer
        self.removed: list[str] = []
        self.was_removed = threading.Event()

    def add_onion(self, ports, key, clients, max_streams, timeout):
        self.asked.set()
        self.release.wait(5)
        return "a" * 56, None

    def remove_onion(self, service_id):
        self.removed.append(service_id)
        self.was_removed.set()
        return True


async def test_a_service_added_after_its_publication_was_cancelled_is_removed(tmp_path):
    path = tmp_path / "app.onion-key"
    write_key(path, "ED25519-V3:" + base64.b64encode(bytes(64)).decode())
    control, service = SlowControl(), OnionService(OnionSettings(path))
    publishing = asyncio.create_task(service.publish(control, Address("127.0.0.1", 8080), 80))
    assert await asyncio.to_thread(control.asked.wait, 5)
    publishing.cancel()
    control.release.set()
    with pytest.raises(asyncio.CancelledError):
        await publishing
    await asyncio.to_thread(control.was_removed.wait, 5)
    assert control.removed == ["a" * 56]
    assert not service.published


def test_nothing_from_a_caller_reaches_tor_unless_it_has_the_shape_tor_expects():
    control = Control(NoControl())
    key = "ED25519-V3:" + base64.b64encode(bytes(64)).decode()
    for ports, key_, clients in (
            ({80: "127.0.0.1:8080\r\nSIGNAL HALT"}, None, []),
            ({80: "127.0.0.1:8080"}, key + " Flags=Detach", []),
            ({80: "127.0.0.1:8080"}, None, ["A" * 52 + " Flags=Detach"]),
            ({0: "127.0.0.1:8080"}, None, [])):
        with pytest.raises(OnionError):
            control.add_onion(ports, key_, clients, None, 1)
    with pytest.raises(OnionError):
        control.remove_onion("abc\r\nSIGNAL HALT")


async def _onion_of(proxy, timeout: float = 120) -> str:
    """The entry's .onion address once the running server published it."""
    started = time.monotonic()
    while True:
        state = proxy.in_loop(proxy.server.reverses.status)[0]["onion_service"]
        if state is not None and state["published"]:
            return state["address"]
        assert time.monotonic() - started < timeout, state
        await asyncio.sleep(0.2)


@pytest.mark.tor
@pytest.mark.slow
async def test_a_reverse_entry_is_an_onion_service_that_names_no_backend(
        tornet, client_tor, start_proxy, tmp_path, monkeypatch):
    """The whole server: `listen = "off"`, a [[reverse]] entry with `onion` through a managed
    tor exit of the profile; the client tor reaches the backend by the .onion name, the
    response has nothing that names the backend, a redirect points at the .onion name; the
    same address after the server restarts on the same key file."""
    from backends import IDENTIFYING, Backend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backend = Backend("app")
    profile = (
        'listen = "off"\ndefault = "tor"\n'
        f'[exits.tor]\ntor = {{ control = "managed", torrc = "{tornet.client_torrc}" }}\n'
        '[[reverse]]\nlisten = "127.0.0.1:0"\n'
        f'backends = ["{backend.url}"]\nhosts = ["app.example"]\n'
        'onion = { key = "keys/app.onion-key", tor = "tor" }\n')
    (tmp_path / "keys").mkdir(mode=0o700)
    try:
        proxy = start_proxy(profile)
        onion = await _onion_of(proxy)
        assert (tmp_path / "keys" / "app.onion-key").stat().st_mode & 0o777 == 0o600
        code, response, _ = await reach(client_tor, onion)
        assert code == 0, hex(code)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b"app /"
        for name in (*IDENTIFYING, "Server"):
            assert f"\r\n{name.lower()}:".encode() not in head.lower(), name
        assert f"127.0.0.1:{backend.port}".encode() not in response
        _, fields, _ = backend.seen[-1]
        assert fields["Host"] == onion  # the name the visitor used reached the app
        proxy.stop()
        again = start_proxy(profile, name="again")
        assert await _onion_of(again) == onion  # the key file keeps the address
        client_tor.controller.signal(Signal.NEWNYM)  # (its cached descriptor is the old one)
        code, response, _ = await reach(client_tor, onion)
        assert code == 0 and response.endswith(b"app /")
    finally:
        backend.stop()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_key_in_a_folder_others_can_write_is_refused(tmp_path, mode):
    """Whoever may write the folder may delete the key (a new address) or replace it."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(OnionKeyError, match="folder"):
        read_key(folder / "app.onion-key")
