"""Tor exits end to end on a private Tor network on loopback (tests/tornet.py): curl through
anonproxy to a recording origin; which exit relay carried each stream is read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import curl

pytestmark = [pytest.mark.tor, pytest.mark.slow]

NAME = "origin.tor.test"  # resolvable only by the exits (the network's DNS stub)


@pytest.fixture
def tor_proxy(start_proxy, start_proxy_process, tornet, tmp_path, monkeypatch):
    """Start anonproxy with managed tors joining the private network; wait until ready.
    `process=True`: `anonproxy serve` itself (for `anonproxy newnym --listen`, which finds it
    by its pid file)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def start(exits: str, rules: str = "", default: str = "tor", extra: str = "",
              wait: bool = True, process: bool = False) -> object:
        text = f'default = "{default}"\n{extra}\n'
        for name, countries, isolation in _parse(exits):
            text += (f'[exits.{name}]\ntor = {{ control = "managed", countries = {countries}, '
                     f'isolation = "{isolation}", torrc = "{tornet.client_torrc}" }}\n')
        text += '[limits]\nconnect_timeout = 20\n' + rules
        proxy = (start_proxy_process if process else start_proxy)(text)
        if not wait:
            return proxy
        count = len(_parse(exits))
        deadline = time.monotonic() + 120
        while proxy.log().count(": ready, SOCKS on") < count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proxy.log().count(": ready, SOCKS on") == count, proxy.log()[-3000:]
        return proxy

    return start


def _parse(exits: str):
    out = []
    for item in exits.split():
        name, _, rest = item.partition("=")
        countries, _, isolation = rest.partition("/")
        codes = [c for c in countries.split(",") if c]
        out.append((name, "[" + ", ".join(f'"{c}"' for c in codes) + "]", isolation or "site"))
    return out


@pytest.fixture
def origin(origin, tornet):
    """The recording origin, noting which exit relay's country each connection came from."""
    origin.identify = tornet.exit_country_of_peer
    return origin


def fetch(proxy, origin, host: str, *args: str):
    """Fetch /echo by `host` through the proxy; the country of the exit that carried it."""
    out = curl(*args, "-x", proxy.url, origin.url("/echo", host=host), timeout=90)
    assert out.returncode == 0, (out.stderr, proxy.log()[-2000:])
    return origin.last.via


def test_rules_send_streams_out_through_exits_of_their_countries_at_once(tor_proxy, tornet, origin):
    proxy = tor_proxy("tor-de=de tor-us=us", default="tor-de", rules=f"""
[[rules]]
domains = ["{NAME}"]
exit = "tor-de"
[[rules]]
cidrs = ["127.0.0.0/8"]
exit = "tor-us"
""")
    for _ in range(2):
        assert fetch(proxy, origin, NAME) == "de"
        assert fetch(proxy, origin, "127.0.0.1") == "us"
        assert fetch(proxy, origin, NAME, "-p") == "de"
    out = curl("-x", f"socks5h://{proxy.host}:{proxy.port}", origin.url("/echo", host=NAME), timeout=90)
    assert out.returncode == 0 and origin.last.via == "de"
    assert "outside the requested countries" not in proxy.log()


def test_a_country_without_exits_fails_closed_naming_it(tor_proxy, tornet, origin):
    """No exit in FR: tor never finishes bootstrapping with StrictNodes; requests are refused
    with a message naming the country, and nothing reaches the origin."""
    proxy = tor_proxy("tor-fr=fr", default="tor-fr", wait=False)
    proxy.wait_log("bootstrapped 50%", timeout=60)
    for target in (origin.url("/echo"), origin.url("/echo", host=NAME)):
        out = curl("-x", proxy.url, target, "-i", timeout=90)
        assert out.stdout.startswith((b"HTTP/1.1 503", b"HTTP/1.1 504")), out.stdout
        assert b"exits in fr" in out.stdout.lower()
    assert not origin.received


def _controller_for(tmp_path: Path, countries: str = ""):
    """A stem controller on the proxy's managed tor (cookie auth, found in its cache dir)."""
    from stem.control import Controller

    for port_file in (tmp_path / "cache" / "anonproxy").glob("tor-*/control.port"):
        torrc = (port_file.parent / "torrc").read_text()
        if countries and f"{{{countries}}}" not in torrc:
            continue
        host, _, port = port_file.read_text().strip().removeprefix("PORT=").rpartition(":")
        controller = Controller.from_port(address=host, port=int(port))
        controller.authenticate()
        return controller
    raise AssertionError("no managed tor control port found")


def _circuit_of_next_stream(controller, action) -> str:
    import threading

    from stem.control import EventType

    seen: list[str] = []
    done = threading.Event()

    def on_stream(event):
        if event.status == "SUCCEEDED" and event.circ_id:
            seen.append(event.circ_id)
            done.set()

    controller.add_event_listener(on_stream, EventType.STREAM)
    try:
        action()
        assert done.wait(30)
    finally:
        controller.remove_event_listener(on_stream)
    return seen[0]


def test_per_site_isolation_and_new_identity_give_new_circuits(tor_proxy, tornet, origin, tmp_path):
    proxy = tor_proxy("tor=", process=True)
    controller = _controller_for(tmp_path)
    try:
        circuit: dict[str, list[str]] = {}  # tunnels (-p): each fetch is a new tor stream
        for host in (NAME, "127.0.0.1", NAME):
            circuit.setdefault(host, []).append(
                _circuit_of_next_stream(controller, lambda h=host: fetch(proxy, origin, h, "-p")))
        assert circuit[NAME][0] == circuit[NAME][1]  # one site keeps its circuit
        assert circuit[NAME][0] != circuit["127.0.0.1"][0]  # two sites never share one
        out = subprocess.run([sys.executable, "-m", "anonproxy", "newnym", "--listen",
                              f"{proxy.host}:{proxy.port}"], capture_output=True, text=True,
                             timeout=30, env={**os.environ})
        assert out.returncode == 0, out.stderr
        proxy.wait_log("new identity", timeout=30)
        after = _circuit_of_next_stream(controller, lambda: fetch(proxy, origin, NAME, "-p"))
        assert after != circuit[NAME][0]
    finally:
        controller.close()


def test_killed_managed_tor_fails_closed_then_comes_back(tor_proxy, tornet, origin, tmp_path):
    proxy = tor_proxy("tor=")
    assert fetch(proxy, origin, NAME) is not None
    controller = _controller_for(tmp_path)
    pid = int(controller.get_info("process/pid"))
    controller.close()
    os.kill(pid, signal.SIGKILL)
    proxy.wait_log("restarting in", timeout=10)
    seen = len(origin.received)
    out = curl("-x", proxy.url, origin.url("/echo", host=NAME), "-i", timeout=60)
    assert out.stdout.startswith((b"HTTP/1.1 503", b"HTTP/1.1 502")), out.stdout
    assert len(origin.received) == seen
    deadline = time.monotonic() + 120
    while proxy.log().count(": ready, SOCKS on") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fetch(proxy, origin, NAME) is not None


def test_onion_names_never_leave_except_through_tor(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n')
    onion = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"
    out = curl("-x", proxy.url, f"http://{onion}/", "-i")
    assert out.stdout.startswith(b"HTTP/1.1 403") and b"only a Tor exit can reach it" in out.stdout
    out = curl("-x", f"socks5h://{proxy.host}:{proxy.port}", f"http://{onion}/")
    assert out.returncode != 0
    assert "cannot resolve" not in proxy.log()  # refused before any lookup


def test_resolve_through_tor_gives_country_rules_an_address(tor_proxy, tornet, origin, tmp_path):
    """NAME is unknown to this machine; tor's RESOLVE finds 127.0.0.1, which the test GeoIP
    places in GB, so the GB rule (exit in the US) wins over the default (exit in Germany)."""
    from geodb import write_country_db

    geo = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.1/32": "GB"})
    proxy = tor_proxy("tor-de=de tor-us=us", default="tor-de",
                      extra=f'resolve = "tor"\ngeoip = "{geo}"\n',
                      rules='[[rules]]\ncountries = ["GB"]\nexit = "tor-us"\n')
    assert fetch(proxy, origin, NAME) == "us"


def test_a_system_tor_is_used_through_its_control_port(start_proxy, tornet, origin, tmp_path):
    """A tor the user runs (here: a client of the private network with cookie authentication)."""
    from upstreams import free_port, wait_listening

    data = tmp_path / "system-tor"
    data.mkdir(mode=0o700)
    socks, control = free_port("127.0.0.1"), free_port("127.0.0.1")
    torrc = data / "torrc"
    torrc.write_text(f"%include {tornet.client_torrc}\nDataDirectory {data}\n"
                     f"SocksPort 127.0.0.1:{socks}\nControlPort 127.0.0.1:{control}\n"
                     "CookieAuthentication 1\nRunAsDaemon 0\n")
    process = subprocess.Popen(["tor", "--defaults-torrc", os.devnull, "-f", str(torrc)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.1", control, process, timeout=30)
        proxy = start_proxy(f'default = "sys"\n[exits.sys]\n'
                            f'tor = {{ control = "127.0.0.1:{control}" }}\n')
        proxy.wait_log(": connected, SOCKS on", timeout=30)
        assert f"SOCKS on 127.0.0.1:{socks}" in proxy.log()
        deadline = time.monotonic() + 60
        while True:  # the system tor may still be bootstrapping: the proxy fails closed meanwhile
            out = curl("-x", proxy.url, origin.url("/echo", host=NAME), timeout=60)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert out.returncode == 0, proxy.log()[-2000:]
        assert origin.last.via in tornet.exits
    finally:
        process.terminate()
        process.wait(10)


def test_new_identity_for_one_site_leaves_other_sites_alone(tor_proxy, tornet, origin, tmp_path):
    proxy = tor_proxy("tor=", process=True)
    controller = _controller_for(tmp_path)
    try:
        def circuit(host: str) -> str:
            return _circuit_of_next_stream(controller, lambda: fetch(proxy, origin, host, "-p"))

        before = {host: circuit(host) for host in (NAME, "127.0.0.1")}
        out = subprocess.run([sys.executable, "-m", "anonproxy", "newnym", "--site", NAME,
                              "--listen", f"{proxy.host}:{proxy.port}"], capture_output=True,
                             text=True, timeout=30, env={**os.environ})
        assert out.returncode == 0, out.stderr
        assert "new identity for tor.test" in proxy.wait_log("new identity for tor.test", timeout=30)
        assert circuit(NAME) != before[NAME]
        assert circuit("127.0.0.1") == before["127.0.0.1"]
    finally:
        controller.close()


def test_per_connection_isolation_never_reuses_a_circuit(tor_proxy, tornet, origin, tmp_path):
    import threading

    from stem.control import EventType

    proxy = tor_proxy("tor=/connection")
    controller = _controller_for(tmp_path)
    circuits: list[str] = []
    lock = threading.Lock()

    def on_stream(event):
        if event.status == "SUCCEEDED" and event.circ_id:
            with lock:
                circuits.append(event.circ_id)

    controller.add_event_listener(on_stream, EventType.STREAM)
    try:
        url = origin.url("/echo", host=NAME)
        out = curl("-x", proxy.url, url, url, url, "-o", "/dev/null", "-o", "/dev/null",
                   "-o", "/dev/null", timeout=90)  # one kept-alive client connection
        assert out.returncode == 0
        deadline = time.monotonic() + 10
        while len(circuits) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(set(circuits)) == 3
    finally:
        controller.close()


def test_the_managed_tors_control_port_is_never_a_destination(tor_proxy, tmp_path):
    proxy = tor_proxy("tor=")
    port_file = next((tmp_path / "cache" / "anonproxy").glob("tor-*/control.port"))
    host, _, port = port_file.read_text().strip().removeprefix("PORT=").rpartition(":")
    out = curl("-x", proxy.url, f"http://{host}:{port}/", "-i", timeout=30)
    assert out.stdout.startswith(b"HTTP/1.1 403") and b"tor control port" in out.stdout
