"""An echo service for tests ("what is my IP") on a loopback socket: it answers with the
address the request came from, as plain text (/ip) or JSON (/json: `ip` and the headers it
got, as httpbin does; /origin: httpbin's `origin` key), /hello no address at all; and records
the peer of each request it answered."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import answer


@dataclass
class Echo:
    host: str
    port: int
    peers: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # (http.server names it)
        peer = self.client_address[0]
        self.server.echo.peers.append(peer)
        if self.path == "/ip":
            body, kind = f"{peer}\n".encode(), "text/plain"
        elif self.path in ("/json", "/origin"):
            key = "ip" if self.path == "/json" else "origin"
            body = json.dumps({key: peer, "headers": dict(self.headers.items())}).encode()
            kind = "application/json"
        elif self.path == "/hello":  # a page that names no address
            body, kind = b"<html>hello</html>", "text/html"
        else:
            self.send_error(404)
            return
        answer(self, body, kind)

    def log_message(self, format, *args) -> None:  # (quiet)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    echo: Echo


def start_echo(host: str = "127.0.0.1") -> tuple[Echo, ThreadingHTTPServer]:
    server = _Server((host, 0), _Handler)
    server.echo = Echo(host, server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.echo, server
