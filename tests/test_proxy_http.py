"""End to end through the real proxy with curl and raw sockets: plain HTTP."""

from __future__ import annotations

import hashlib
import json
import socket

from helpers import curl, recv_all, recv_until, wait_until
from origin import pattern
from probes import receive_queue

IDENTIFYING = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Host": "me.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "Forwarded": "for=203.0.113.7",
    "Via": "1.1 corp-proxy",
    "X-Real-IP": "203.0.113.7",
    "Client-IP": "203.0.113.7",
    "True-Client-IP": "203.0.113.7",
    "CF-Connecting-IP": "203.0.113.7",
    "X-Client-IP": "203.0.113.7",
    "X-Originating-IP": "203.0.113.7",
    "X-Cluster-Client-IP": "203.0.113.7",
    "From": "me@example.org",
    "X-ProxyUser-Ip": "203.0.113.7",
    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
    "Sec-CH-UA-Full-Version-List": '"Chromium";v="120.0.6099.109"',
    "Sec-CH-UA-Model": '"Pixel 7"',
}


def test_identifying_headers_never_reach_the_origin(proxy, origin):
    args = []
    for name, value in IDENTIFYING.items():
        args += ["-H", f"{name}: {value}"]
    out = curl("-x", proxy.url, origin.url("/echo"), *args)
    assert out.returncode == 0, out.stderr
    seen = {n.lower() for n in origin.last.names()}
    assert not seen & {n.lower() for n in IDENTIFYING}
    assert origin.last.header("sec-ch-ua-model") is None


def test_nothing_identifying_is_added_upstream(proxy, origin):
    """The origin sees exactly the client's own headers, in order and case: nothing added."""
    sent = [("Host", f"127.0.0.1:{origin.port}"), ("uSeR-aGeNt", "curl/test"),
            ("Accept", "*/*"), ("X-Custom", "kept as is"), ("Sec-CH-UA", '"Chromium";v="120"')]
    with proxy.connect() as sock:
        head = f"GET {origin.url('/echo')} HTTP/1.1\r\n" + "".join(
            f"{n}: {v}\r\n" for n, v in sent) + "Connection: close\r\n\r\n"
        sock.sendall(head.encode())
        response = recv_all(sock)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert origin.last.headers == sent
    head = response.split(b"\r\n\r\n")[0].lower()
    assert b"via:" not in head and b"server:" not in head and b"x-forwarded" not in head


def test_header_policy_strips_and_replaces(start_proxy, origin):
    proxy = start_proxy("""
default = "direct"
[exits.direct]
[headers]
user_agent = { replace = "Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0" }
accept_language = { replace = "en-US,en;q=0.5" }
referer = "same-origin-only"
cookie = "strip"
client_hints = "strip-all"
""")
    out = curl("-x", proxy.url, origin.url("/echo"), "-A", "MyBrowser/1.0",
               "-H", "Accept-Language: de-CH", "-H", "Referer: http://elsewhere.example/secret",
               "-H", "Cookie: id=42", "-H", "Sec-CH-UA-Mobile: ?0")
    assert out.returncode == 0, out.stderr
    got = origin.last
    assert got.header("user-agent").startswith("Mozilla/5.0 (Windows NT 10.0")
    assert got.header("accept-language") == "en-US,en;q=0.5"
    assert got.header("referer") is None
    assert got.header("cookie") is None
    assert got.header("sec-ch-ua-mobile") is None
    out = curl("-x", proxy.url, origin.url("/echo"),
               "-H", f"Referer: {origin.url('/page?q=1')}")
    assert origin.last.header("referer") == origin.url("/page?q=1")


def test_default_referer_policy_keeps_only_the_origin(proxy, origin):
    curl("-x", proxy.url, origin.url("/echo"), "-H", "Referer: http://a.example:8080/path?secret=1")
    assert origin.last.header("referer") == "http://a.example:8080/"


def test_ten_megabyte_upload_and_download_stream_intact(proxy, origin):
    size = 10 * 1024 * 1024
    out = curl("-x", proxy.url, origin.url(f"/bytes/{size}"))
    assert out.returncode == 0 and hashlib.sha256(out.stdout).digest() == hashlib.sha256(pattern(size)).digest()
    body = pattern(size)
    out = curl("-x", proxy.url, origin.url("/upload"), "--data-binary", "@-", input=body)
    assert json.loads(out.stdout)["sha256"] == hashlib.sha256(body).hexdigest()
    out = curl("-x", proxy.url, origin.url("/upload"), "-H", "Transfer-Encoding: chunked",
               "--data-binary", "@-", input=body)
    reply = json.loads(out.stdout)
    assert reply["length"] == size and reply["sha256"] == hashlib.sha256(body).hexdigest()
    assert origin.last.header("transfer-encoding") == "chunked"


def test_chunked_and_close_delimited_downloads(proxy, origin):
    for query in ("chunked=1", "close=1"):
        out = curl("-x", proxy.url, origin.url(f"/bytes/300000?{query}"))
        assert out.returncode == 0, out.stderr
        assert out.stdout == pattern(300000)


def test_keep_alive_reuses_the_client_connection_across_hosts(proxy, origin):
    out = curl("-x", proxy.url, origin.url("/echo"), origin.url("/echo", host="localhost"),
               "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["1", "0"]
    assert [r.header("host") for r in origin.received[-2:]] == [
        f"127.0.0.1:{origin.port}", f"localhost:{origin.port}"]


def test_upstream_connection_is_reused(proxy, origin):
    with proxy.connect() as sock:
        for _ in range(3):
            sock.sendall(f"GET {origin.url('/bytes/10')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert recv_until(sock, pattern(10)).endswith(pattern(10))
    assert len(origin.connections) == 1


def test_head_204_and_304_are_framed_without_a_body(proxy, origin):
    with proxy.connect() as sock:
        for method, path in (("HEAD", "/bytes/5000"), ("GET", "/status/204"),
                             ("GET", "/status/304"), ("GET", "/bytes/7")):
            sock.sendall(f"{method} {origin.url(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = recv_until(sock, pattern(7))
    heads = data.split(b"\r\n\r\n")
    assert heads[0].startswith(b"HTTP/1.1 200") and b"Content-Length: 5000" in heads[0]
    assert heads[1].startswith(b"HTTP/1.1 204")
    assert heads[2].startswith(b"HTTP/1.1 304")
    assert heads[3].startswith(b"HTTP/1.1 200") and heads[4] == pattern(7)


def test_expect_100_continue(proxy, origin):
    body = b"x" * 100_000
    out = curl("-x", proxy.url, origin.url("/upload"), "-H", "Expect: 100-continue",
               "--data-binary", "@-", "-v", input=body)
    assert json.loads(out.stdout)["length"] == len(body)
    assert b"< HTTP/1.1 100" in out.stderr  # the interim response reached the client


def test_http10_client_gets_a_body_it_can_frame(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall(f"GET {origin.url('/bytes/70000?chunked=1')} HTTP/1.0\r\n\r\n".encode())
        data = recv_all(sock)
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower()
    assert body == pattern(70000)


def test_websocket_upgrade_passes_through(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall((f"GET {origin.url('/ws')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = recv_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"\x81\x05hello")
        assert recv_until(sock, b"hello").endswith(b"\x81\x05hello")
    assert origin.last.header("upgrade") == "websocket"
    assert origin.last.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="


def test_malformed_request_gets_400_and_the_next_connection_works(proxy, origin):
    bad = [
        b"GARBAGE\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for raw in bad:
        with proxy.connect() as sock:
            sock.sendall(raw)
            reply = recv_all(sock)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert reply.split(b"\r\n\r\n", 1)[1].strip().endswith(b".")
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.received[-1].target == "/echo" and len(origin.received) == 1


def test_oversized_head_is_refused_with_431(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall(f"GET {origin.url('/echo')} HTTP/1.1\r\nX-Big: {'a' * 70000}\r\n\r\n".encode())
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert not origin.received


def test_unreachable_destination_gets_502_naming_the_exit(proxy):
    out = curl("-x", proxy.url, "http://127.0.0.1:9/", "-i")
    assert out.stdout.startswith(b"HTTP/1.1 502 ")
    assert b"exit 'direct'" in out.stdout and b"127.0.0.1:9" in out.stdout


def test_source_address_is_honoured(start_proxy, origin):
    proxy = start_proxy('default = "home"\n[exits.home]\nsource = "127.0.0.5"\n')
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.5"
    assert curl("-x", f"socks5h://{proxy.host}:{proxy.port}", origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.5"


def test_other_schemes_get_a_clear_error(proxy):
    with proxy.connect() as sock:
        sock.sendall(b"GET ftp://127.0.0.1:21/ HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 501 ")


def test_pipelined_requests_are_answered_in_order(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall(b"".join(
            f"GET {origin.url(f'/bytes/{n}')} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in (3, 5)))
        data = recv_until(sock, pattern(5), limit=4096)
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(pattern(5)):
            data += sock.recv(4096)
    first, second = data.split(b"HTTP/1.1 200")[1:]
    assert first.endswith(pattern(3)) and second.endswith(pattern(5))


def test_reset_upstream_midstream_aborts_the_client(proxy):
    """An origin that dies mid-body: the client must see a truncated transfer, not a complete one."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    out_holder = {}

    import threading

    def serve():
        conn, _ = listener.accept()
        recv_until(conn, b"\r\n\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    out_holder["r"] = curl("-x", proxy.url, f"http://127.0.0.1:{port}/x")
    thread.join()
    listener.close()
    assert out_holder["r"].returncode != 0  # curl: transfer closed with outstanding data


def test_unasked_upstream_bytes_never_reach_the_next_client(proxy):
    """An origin that sends a second response unasked: that response must not be handed to
    another client that reuses the connection."""
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connections = []
    unasked = threading.Event()  # the unasked response has been sent on the first connection

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            recv_until(conn, b"\r\n\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            time.sleep(0.3)  # the hostile part: a response later, once the exchange is over
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nFOR-FIRST-ONLY")
                unasked.set()
                data = recv_until(conn, b"\r\n\r\n")
                if data:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    listener.settimeout(3)
    assert curl("-x", proxy.url, f"http://127.0.0.1:{port}/first").stdout == b"first"
    assert unasked.wait(5)
    # ... and the proxy has read it off its idle upstream connection (the kernel holds none)
    proxy_end = connections[0].getpeername()
    assert wait_until(lambda: receive_queue(proxy_end) == 0), receive_queue(proxy_end)
    out = curl("-x", proxy.url, f"http://127.0.0.1:{port}/second")
    listener.close()
    for conn in connections:  # (ends the server's wait for a request that never comes)
        conn.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    for conn in connections:
        conn.close()
    assert b"FOR-FIRST-ONLY" not in out.stdout
    assert out.stdout in (b"first", b"second")  # a fresh connection answered


def test_two_transfer_encoding_lines_are_refused_before_the_origin(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall(f"POST {origin.url('/upload')} HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n0\r\n\r\n".encode())
        assert recv_all(sock).startswith(b"HTTP/1.1 400 ")
    assert not origin.received


def test_a_client_that_stops_reading_is_cut_off(start_proxy, origin):
    import time

    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nidle_timeout = 2\n')
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(proxy.address)
    sock.sendall(f"GET {origin.url('/bytes/50000000')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    started = time.monotonic()
    log = proxy.wait_log("client closed the connection", timeout=15)
    assert "client closed the connection" in log and time.monotonic() - started < 15
    sock.close()


def test_a_refused_websocket_upgrade_ends_cleanly(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall((f"GET {origin.url('/status/403')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 403") and b"400" not in reply
