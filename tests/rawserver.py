"""A raw-socket origin for tests: answers with exactly the bytes a test scripts, including what no
server library would send (broken framing, bytes after the end, resets, silence, endless floods).

It reads request heads (no bodies) and records each request line with the connection it came
on, so a test can tell whether an upstream connection was reused after a defective response.

Routes, by the request target's path:
  /good           200 with the body b"good", kept alive
  /raw/NAME       the bytes registered with `script(NAME, data, then)`; `then` is "close",
                  "keep" (serve the next request on the connection) or "reset" (RST)
  /silent         reads the request and never answers (until the peer or the test closes)
  /reset          a head with Content-Length 10000000, 64 KiB of body, then an RST
  /flood          200 with Content-Length 10**12, then writes as fast as the peer accepts;
                  `flooded` counts the bytes the kernel took
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"


@dataclass
class Request:
    conn: int  # which accepted connection (0, 1, ...) carried it
    line: bytes


@dataclass
class RawServer:
    host: str
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    scripts: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    flooded: int = 0
    accepted: int = 0
    _server: socketserver.ThreadingTCPServer | None = None
    _open: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, name: str, data: bytes, then: str = "close") -> str:
        """Register a response; returns its path."""
        self.scripts[name] = (data, then)
        return f"/raw/{name}"

    def paths(self) -> list[bytes]:
        return [r.line.split(b" ")[1] if b" " in r.line else r.line for r in self.requests]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        raw: RawServer = self.server.raw
        sock: socket.socket = self.request
        with raw._lock:
            conn, raw.accepted = raw.accepted, raw.accepted + 1
            raw._open.add(sock)
        try:
            self._serve(raw, sock, conn)
        except OSError:
            pass
        finally:
            with raw._lock:
                raw._open.discard(sock)

    def _serve(self, raw: RawServer, sock: socket.socket, conn: int) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n", 1)[0]
            raw.requests.append(Request(conn, line))
            parts = line.split(b" ")
            path = urlsplit(parts[1].decode("latin-1")).path if len(parts) > 1 else ""
            if path == "/good":
                sock.sendall(GOOD)
                continue
            if path == "/silent":
                while sock.recv(65536):
                    pass
                return
            if path == "/reset":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"r" * 65536)
                _reset(sock)
                return
            if path == "/flood":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
                block = b"f" * 65536
                while True:
                    raw.flooded += sock.send(block)
            if path.startswith("/raw/") and path[5:] in raw.scripts:
                data, then = raw.scripts[path[5:]]
                sock.sendall(data)
                if then == "keep":
                    continue
                if then == "reset":
                    _reset(sock)
                return
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def start_raw_server(host: str = "127.0.0.1") -> RawServer:
    server = _Server((host, 0), _Handler)
    raw = RawServer(host, server.server_address[1], _server=server)
    server.raw = raw
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return raw
