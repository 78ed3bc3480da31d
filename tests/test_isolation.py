"""Tor circuit isolation as clients and users see it, on the private Tor network (tests/tornet.py):
a SOCKS5 client's own credentials split circuits as tor's IsolateSOCKSAuth would; lookups
through tor use the key of the request they serve; `newnym --site` renews a profile's circuit
when the exit isolates per profile, and says so (and per connection, that there was nothing to
renew). Circuits are read from the managed tor's control port (STREAM events carry the
circuit id)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import test_tor
from helpers import curl, wait_until
from test_tor import NAME, _circuit_of_next_stream, _controller_for
from upstreams import free_port

tor_proxy, origin = test_tor.tor_proxy, test_tor.origin  # the same fixtures as test_tor's


def on_tornet(test):
    return pytest.mark.tor(pytest.mark.slow(test))


ELSEWHERE = "elsewhere.test"  # another site; unknown to the network's DNS (tor answers NXDOMAIN)


def _newnym_site(proxy, site: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", "newnym", "--site", site,
                           "--listen", f"{proxy.host}:{proxy.port}"], capture_output=True,
                          check=False, text=True, timeout=30, env={**os.environ})


def _socks_fetch(proxy, origin, credentials: str = "", host: str = NAME) -> None:
    """One SOCKS5 connection (remote DNS) through the proxy, with `user:password` if given."""
    auth = f"{credentials}@" if credentials else ""
    out = curl("-x", f"socks5h://{auth}{proxy.host}:{proxy.port}", origin.url("/echo", host=host),
               timeout=90)
    assert out.returncode == 0, (out.stderr, proxy.log()[-2000:])


@on_tornet
def test_socks5_clients_with_different_credentials_get_different_circuits(tor_proxy, origin,
                                                                           tmp_path):
    proxy = tor_proxy("tor=")
    controller = _controller_for(tmp_path)
    try:
        def circuit(credentials: str) -> str:
            return _circuit_of_next_stream(controller,
                                           lambda: _socks_fetch(proxy, origin, credentials))

        alice, bob = circuit("alice:pw-of-alice"), circuit("bob:pw-of-bob")
        nobody, other_password = circuit(""), circuit("alice:pw-2-of-alice")
        assert len({alice, bob, nobody, other_password}) == 4
        seen = " ".join(f"{c.socks_username} {c.socks_password}"
                        for c in controller.get_circuits([]))
    finally:
        controller.close()
    for secret in ("alice", "bob", "pw-"):  # never passed on or logged as such
        assert secret not in seen and secret not in proxy.log()


@on_tornet
def test_socks5_clients_with_the_same_credentials_share_their_site_circuit(tor_proxy, origin,
                                                                          tmp_path):
    proxy = tor_proxy("tor=")
    controller = _controller_for(tmp_path)
    try:
        def circuit(credentials: str) -> str:
            return _circuit_of_next_stream(controller,
                                           lambda: _socks_fetch(proxy, origin, credentials))

        first, again = circuit("alice:one"), circuit("alice:one")
        assert first == again
        assert circuit("") == circuit("")  # no credentials: one circuit per site, as before
    finally:
        controller.close()


@on_tornet
def test_a_selectable_profiles_password_still_splits_circuits(tor_proxy, tornet, origin,
                                                               tmp_path):
    """The username picks the profile (so it joins nothing); the password is the client's."""
    (tmp_path / "other.toml").write_text(
        f'default = "tor"\n[exits.tor]\ntor = {{ control = "managed", '
        f'torrc = "{tornet.client_torrc}" }}\n[limits]\nconnect_timeout = 20\n')
    proxy = tor_proxy("tor=", extra='selectable = ["other.toml"]\n')
    controller = _controller_for(tmp_path)
    try:
        def circuit(credentials: str) -> str:
            return _circuit_of_next_stream(controller,
                                           lambda: _socks_fetch(proxy, origin, credentials))

        first, second = circuit("other:pw-1"), circuit("other:pw-2")
        assert first != second
        assert circuit("other:pw-1") == first
    finally:
        controller.close()


def _resolves_and_streams(controller, action, names: frozenset[str] = frozenset({NAME})):
    """Run `action`, which looks up `names` and connects once; the circuit of each RESOLVE by
    name, and of each stream that connected (tor reports those by the address the exit
    reached). Events arrive on stem's own thread, after the action may have returned: they are
    awaited before the listener goes."""
    from stem.control import EventType

    resolves: dict[str, str] = {}
    streams: list[str] = []
    lock = threading.Lock()

    def on_stream(event):
        if not event.circ_id:
            return
        with lock:
            if event.status == "SENTRESOLVE":
                resolves.setdefault(event.target_address, event.circ_id)
            elif event.status == "SUCCEEDED" and event.target_port:
                streams.append(event.circ_id)

    def arrived() -> bool:
        with lock:
            return names <= resolves.keys() and bool(streams)

    controller.add_event_listener(on_stream, EventType.STREAM)
    try:
        action()
        wait_until(arrived, timeout=30)
    finally:
        controller.remove_event_listener(on_stream)
    return resolves, streams


@on_tornet
def test_tor_lookups_use_the_isolation_key_of_the_request_they_serve(tor_proxy, origin,
                                                                     tmp_path):
    """A country rule makes each name be resolved at a Tor exit first: the lookup for a site
    rides that site's circuit (the stream's own key), and two sites' lookups never share one."""
    from geodb import write_country_db

    geo = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.1/32": "GB"})
    proxy = tor_proxy("tor=", extra=f'resolve = "tor"\ngeoip = "{geo}"\n',
                      rules='[[rules]]\ncountries = ["GB"]\nexit = "tor"\n')
    controller = _controller_for(tmp_path)
    try:
        def both():
            _socks_fetch(proxy, origin, host=NAME)
            curl("-x", f"socks5h://{proxy.host}:{proxy.port}",
                 origin.url("/echo", host=ELSEWHERE), timeout=90)  # NXDOMAIN at the exit

        resolves, streams = _resolves_and_streams(controller, both, frozenset({NAME, ELSEWHERE}))
    finally:
        controller.close()
    assert set(resolves) == {NAME, ELSEWHERE}, (resolves, proxy.log()[-2000:])
    assert resolves[NAME] != resolves[ELSEWHERE]
    assert streams == [resolves[NAME]], (resolves, streams)  # ELSEWHERE's did not connect


@on_tornet
def test_tor_lookups_carry_the_clients_own_credentials(tor_proxy, origin, tmp_path):
    from geodb import write_country_db

    geo = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.1/32": "GB"})
    proxy = tor_proxy("tor=", extra=f'resolve = "tor"\ngeoip = "{geo}"\n',
                      rules='[[rules]]\ncountries = ["GB"]\nexit = "tor"\n')
    controller = _controller_for(tmp_path)
    try:
        alice, alice_streams = _resolves_and_streams(
            controller, lambda: _socks_fetch(proxy, origin, "alice:one"))
        bob, _ = _resolves_and_streams(controller, lambda: _socks_fetch(proxy, origin, "bob:two"))
    finally:
        controller.close()
    assert alice[NAME] != bob[NAME]
    assert alice_streams == [alice[NAME]]


@on_tornet
def test_new_identity_for_one_site_under_profile_isolation_renews_the_profile_and_says_so(
        tor_proxy, origin, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    proxy = tor_proxy("tor=/profile", extra=f'admin = "127.0.0.1:{free_port("127.0.0.1")}"\n',
                      process=True)
    controller = _controller_for(tmp_path)
    try:
        def circuit(host: str) -> str:
            return _circuit_of_next_stream(controller,
                                           lambda: _socks_fetch(proxy, origin, host=host))

        before = circuit(NAME)
        assert circuit("127.0.0.1") == before  # one circuit for the whole profile
        out = _newnym_site(proxy, NAME)
        assert out.returncode == 0, out.stderr
        after = circuit(NAME)
        assert after != before
        assert circuit("127.0.0.1") == after
        said = ("exit 'tor' isolates per profile: a new identity for one site is a new "
                "identity for the whole profile 'test'")
        assert said in out.stdout
        assert said in proxy.wait_log(said, timeout=10)
    finally:
        controller.close()


def test_new_identity_for_one_site_under_connection_isolation_says_there_was_nothing_to_renew(
        start_proxy_process, tmp_path, monkeypatch):
    """No tor network needed: the answer depends on the profile (its tor is unreachable)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    admin, closed = free_port("127.0.0.1"), free_port("127.0.0.1")
    proxy = start_proxy_process(f'admin = "127.0.0.1:{admin}"\ndefault = "t"\n[exits.t]\n'
                        f'tor = {{ control = "127.0.0.1:{closed}", isolation = "connection" }}\n')
    out = _newnym_site(proxy, "www.example.com")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("exit 't' isolates per connection: every connection already "
                                  "gets a circuit of its own, so there was nothing to renew for "
                                  "example.com")
