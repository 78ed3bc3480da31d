"""What the proxy tells others about the user and about itself, end to end through the real
proxy process: identifying headers a client sends, the PAC file, the error pages a web page can
read, and what /api/exits shows."""

from __future__ import annotations

from helpers import recv_all


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
