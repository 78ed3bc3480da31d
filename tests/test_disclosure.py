"""What the proxy tells others about the user and about itself, end to end through the real
proxy: identifying headers a client sends, the PAC file, the error pages a web page can
read, and what /api/exits shows."""

from __future__ import annotations

import pytest
from helpers import curl, recv_all
from upstreams import free_port, microsocks

from anonproxy.inbound.pac import pac_address
from anonproxy.wire.address import Address

A = Address


def test_underscore_and_new_identifying_headers_never_reach_the_origin(proxy, origin):
    """X_Forwarded_For (underscores) and two of the added names are dropped; an ordinary
    header beside them arrives as sent."""
    sent = [("X_Forwarded_For", "203.0.113.7"), ("WL-Proxy-Client-IP", "203.0.113.7"),
            ("x-uidh", "OTgxNTk2NDk0ODkw"), ("X-Mine", "kept")]
    with proxy.connect() as sock:
        sock.sendall((f"GET {origin.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n"
                      + "".join(f"{n}: {v}\r\n" for n, v in sent)
                      + "Connection: close\r\n\r\n").encode())
        response = recv_all(sock)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert origin.last.headers == [("Host", f"127.0.0.1:{origin.port}"), ("X-Mine", "kept")]


def _pac(proxy, host: str | None) -> bytes:
    with proxy.connect() as sock:
        sock.sendall(b"GET /proxy.pac HTTP/1.1\r\n"
                     + (f"Host: {host}\r\n".encode() if host is not None else b"")
                     + b"Connection: close\r\n\r\n")
        return recv_all(sock)


def test_pac_only_for_the_proxys_own_host(proxy):
    """Served when Host names the proxy (its address, or a loopback name with its port), naming
    the proxy's own address; a name that merely resolves here (DNS rebinding: a web page's
    own name pointed at 127.0.0.1) or another port gets a 404 that echoes nothing."""
    for host in (f"evil.example:{proxy.port}", f"rebind.attacker.test:{proxy.port}",
                 "127.0.0.1", f"127.0.0.1:{proxy.port + 1}", f"127.0.0.1.nip.io:{proxy.port}",
                 None):
        answer = _pac(proxy, host)
        assert answer.startswith(b"HTTP/1.1 404 "), (host, answer)
        assert b"FindProxyForURL" not in answer and b"evil" not in answer and b"rebind" not in answer
        assert b"nip.io" not in answer
    line = f'return "SOCKS5 127.0.0.1:{proxy.port}; PROXY 127.0.0.1:{proxy.port}";'.encode()
    for host in (f"127.0.0.1:{proxy.port}", f"localhost:{proxy.port}", f"LocalHost:{proxy.port}"):
        answer = _pac(proxy, host)
        assert answer.startswith(b"HTTP/1.1 200 ") and line in answer, host


@pytest.mark.parametrize("host, listen, local, expected", [
    ("127.0.0.1:8118", A("127.0.0.1", 8118), A("127.0.0.1", 8118), A("127.0.0.1", 8118)),
    ("localhost:8118", A("127.0.0.1", 8118), A("127.0.0.1", 8118), A("127.0.0.1", 8118)),
    ("[::1]:8118", A("127.0.0.1", 8118), A("127.0.0.1", 8118), A("127.0.0.1", 8118)),
    ("localhost:8118", A("::1", 8118), A("::1", 8118), A("::1", 8118)),
    ("evil.example:8118", A("127.0.0.1", 8118), A("127.0.0.1", 8118), None),
    ("127.0.0.1", A("127.0.0.1", 8118), A("127.0.0.1", 8118), None),  # port 80
    ("127.0.0.1:8119", A("127.0.0.1", 8118), A("127.0.0.1", 8118), None),
    ("127.0.0.1:8118:x", A("127.0.0.1", 8118), A("127.0.0.1", 8118), None),
    (None, A("127.0.0.1", 8118), A("127.0.0.1", 8118), None),
    # a wildcard listener: the local address the connection reached is ours
    ("192.0.2.5:8118", A("0.0.0.0", 8118), A("192.0.2.5", 8118), A("192.0.2.5", 8118)),
    ("localhost:8118", A("0.0.0.0", 8118), A("192.0.2.5", 8118), None),
    ("192.0.2.6:8118", A("0.0.0.0", 8118), A("192.0.2.5", 8118), None),
    ("localhost:8118", A("0.0.0.0", 8118), A("127.0.0.1", 8118), A("127.0.0.1", 8118)),
    # a listener on one interface: only its address
    ("192.0.2.5:8118", A("192.0.2.5", 8118), A("192.0.2.5", 8118), A("192.0.2.5", 8118)),
    ("localhost:8118", A("192.0.2.5", 8118), A("192.0.2.5", 8118), None),
])
def test_pac_names_only_our_own_address(host, listen, local, expected):
    assert pac_address(host, listen, local) == expected


def test_error_pages_name_the_exit_not_the_hop(start_proxy, tmp_path):
    """502/503 bodies (a web page can read them) name the exit and the stage; hop addresses,
    hop usernames and a direct exit's source address go to the log only."""
    hop = microsocks("127.0.0.2", tmp_path, user="hopuser", password="hoppass")
    dead, gone = free_port("127.0.0.3"), free_port("127.0.0.4")
    try:
        proxy = start_proxy(f"""
default = "uk"
[exits.uk]
via = ["{hop.url}", "socks5://deaduser:deadpass@127.0.0.3:{dead}"]
[exits.gone]
via = ["http://pooluser:poolpass@127.0.0.4:{gone}"]
[exits.pool]
pool = ["gone"]
[exits.src]
source = "198.51.100.77"
[[rules]]
domains = ["pool.test"]
exit = "pool"
[[rules]]
ports = [9]
exit = "src"
""")
        secrets = ["127.0.0.2", "127.0.0.3", "127.0.0.4", str(hop.port), str(dead), str(gone),
                   "hopuser", "deaduser", "pooluser", "198.51.100.77"]
        pages = {}
        for name in ("uk.test", "pool.test", "127.0.0.1:9"):
            out = curl("-s", "-w", "\n%{http_code}", "-x", proxy.url, f"http://{name}/")
            body, _, code = out.stdout.decode().rpartition("\n")
            pages[name] = (code, body)
            leaked = [s for s in secrets if s in body]
            assert not leaked, (name, body)
        assert pages["uk.test"] == (
            "502", "exit 'uk' failed at hop 1 (socks5) asking for hop 2: connection refused.\n")
        assert pages["pool.test"][0] == "503" and pages["pool.test"][1].startswith(
            "exit 'pool' has no member up (gone: exit 'gone' failed at hop 1 (http): "
            "connection refused")
        unavailable = ("exit 'src' could not connect to 127.0.0.1:9: its source address is not "
                       "available on this machine.\n")
        assert pages["127.0.0.1:9"] == ("502", unavailable)
        log = proxy.wait_log(f"127.0.0.4:{gone}")
        assert f"(socks5 127.0.0.2:{hop.port}) asking for hop 2 127.0.0.3:{dead}" in log
        assert f"(http 127.0.0.4:{gone})" in log and "from 198.51.100.77" in log
    finally:
        hop.stop()


def test_api_exits_masks_hop_usernames(tmp_path):
    """What /api/exits serves (tests/test_admin.py reads it over HTTP too): a hop's username
    is often an account or customer id, so it is masked like the password."""
    import json

    from anonproxy.admin import snapshot
    from anonproxy.config.profiles import load_profile
    from anonproxy.exits.context import Context

    path = tmp_path / "p.toml"
    path.write_text('default = "de"\n[exits.de]\n'
                    'via = ["socks5://alice-customer-42:s3cret@127.0.0.2:1080", '
                    '"http://127.0.0.3:3128"]\n')
    loaded = load_profile(str(path))
    shown = snapshot.exits(Context(loaded, loaded.profile.listen_address), None)
    assert shown[0]["hops"] == ["socks5://***:***@127.0.0.2:1080", "http://127.0.0.3:3128"]
    assert "alice" not in json.dumps(shown) and "s3cret" not in json.dumps(shown)
