"""A recording origin server for tests: h11 (not our parser) on a real loopback socket.

It records, for every request, the peer address, the method and target, the header fields
exactly as received (names in their case, in order) and the body's length and SHA-256.

Routes:
  /echo            200, JSON of what was received
  /bytes/N         N deterministic bytes with Content-Length (?chunked=1: chunked; ?close=1:
                   close-delimited)
  /upload          consumes the body, answers JSON {"length", "sha256"}
  /status/N        an empty response with status N
  /ws              101 to a WebSocket handshake, then echoes raw bytes until close
  /redirect?to=URL 302 to URL
  /page?sub=URL    an HTML page whose image is URL (for browsers)
Anything with `Expect: 100-continue` gets a 100 Continue before the body is read.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11


def pattern(n: int) -> bytes:
    """N deterministic bytes (so a client can check them without a second copy)."""
    block = bytes(range(256)) * 256  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


@dataclass
class Received:
    peer: tuple
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_length: int = 0
    body_sha256: str = ""
    via: object = None  # what Origin.identify said of the peer while the connection was open

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def names(self) -> list[str]:
        return [n for n, _ in self.headers]


@dataclass
class Origin:
    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    connections: list[tuple] = field(default_factory=list)
    identify: object = None  # optional callable(peer) -> anything, run once per connection

    def url(self, path: str, host: str | None = None) -> str:
        h = host or self.host
        h = f"[{h}]" if ":" in h else h
        return f"http://{h}:{self.port}{path}"

    @property
    def last(self) -> Received:
        return self.received[-1]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        origin = self.server.origin
        sock: socket.socket = self.request
        origin.connections.append(self.client_address)
        via = origin.identify(self.client_address) if origin.identify else None
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = self._next(conn, sock)
            except (h11.RemoteProtocolError, OSError):
                return
            if request is None:
                return
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw_items()]
            rec = Received(self.client_address, request.method.decode(), request.target.decode(),
                           headers, via=via)
            origin.received.append(rec)
            if rec.header("expect") == "100-continue":
                sock.sendall(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            digest, length = hashlib.sha256(), 0
            while True:
                event = self._next(conn, sock)
                if isinstance(event, h11.Data):
                    digest.update(event.data)
                    length += len(event.data)
                elif isinstance(event, h11.EndOfMessage) or event is None:
                    break
            rec.body_length, rec.body_sha256 = length, digest.hexdigest()
            if not self._respond(conn, sock, rec):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _next(self, conn: h11.Connection, sock: socket.socket):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            return event

    def _respond(self, conn: h11.Connection, sock: socket.socket, rec: Received) -> bool:
        url = urlsplit(rec.target)
        query = parse_qs(url.query)
        path = url.path
        if path == "/ws" and (rec.header("upgrade") or "").lower() == "websocket":
            sock.sendall(conn.send(h11.InformationalResponse(
                status_code=101, headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])))
            leftover, _ = conn.trailing_data
            if leftover:
                sock.sendall(leftover)
            while data := sock.recv(65536):
                sock.sendall(data)
            return False
        if path == "/redirect":
            target = query["to"][0]
            sock.sendall(conn.send(h11.Response(status_code=302, headers=[
                ("Location", target), ("Content-Length", "0")])))
            sock.sendall(conn.send(h11.EndOfMessage()))
            return True
        if path == "/page":
            page = (f'<html><head><title>page</title></head><body><p id="ok">loaded</p>'
                    f'<img src="{query["sub"][0]}"></body></html>').encode()
            sock.sendall(conn.send(h11.Response(status_code=200, headers=[
                ("Content-Type", "text/html"), ("Content-Length", str(len(page)))])))
            sock.sendall(conn.send(h11.Data(data=page)))
            sock.sendall(conn.send(h11.EndOfMessage()))
            return True
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            headers = [("X-Origin", "yes")]
            if status not in (204, 304) and rec.method != "HEAD":
                headers.append(("Content-Length", "0"))
            sock.sendall(conn.send(h11.Response(status_code=status, headers=headers)))
            sock.sendall(conn.send(h11.EndOfMessage()))
            return True
        if path.startswith("/bytes/"):
            n = int(path.rsplit("/", 1)[1])
            body = pattern(n)
            if "chunked" in query:
                headers = [("Transfer-Encoding", "chunked")]
            elif "close" in query:
                headers = [("Connection", "close")]
            else:
                headers = [("Content-Length", str(n))]
            sock.sendall(conn.send(h11.Response(status_code=200, headers=headers)))
            if rec.method != "HEAD":
                for i in range(0, n, 1 << 16):
                    sock.sendall(conn.send(h11.Data(data=body[i : i + (1 << 16)])))
            sock.sendall(conn.send(h11.EndOfMessage()))
            return "close" not in query
        if path in ("/echo", "/upload"):
            payload = json.dumps({
                "method": rec.method, "target": rec.target, "headers": rec.headers,
                "length": rec.body_length, "sha256": rec.body_sha256,
            }).encode()
            sock.sendall(conn.send(h11.Response(status_code=200, headers=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])))
            if rec.method != "HEAD":
                sock.sendall(conn.send(h11.Data(data=payload)))
            sock.sendall(conn.send(h11.EndOfMessage()))
            return True
        sock.sendall(conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")])))
        sock.sendall(conn.send(h11.EndOfMessage()))
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # (socketserver's default backlog of 5 drops bursts of SYNs)

    def __init__(self, address, family=socket.AF_INET):
        self.address_family = family
        super().__init__(address, _Handler)


def start_origin(host: str = "127.0.0.1") -> tuple[Origin, _Server]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = _Server((host, 0), family)
    origin = Origin(host, server.server_address[1])
    server.origin = origin
    # polled every 50 ms (not the default 0.5 s): shutdown() at teardown waits for one poll
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return origin, server
