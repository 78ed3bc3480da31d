"""Real backends for reverse entries' tests: HTTP servers on loopback, in threads, that record
each request (its path, fields and peer) and the connections they accepted, and answer with the
fields a backend names itself with."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

IDENTIFYING = {
    "X-Powered-By": "PHP/8.2.7", "X-AspNet-Version": "4.0.30319",
    "X-AspNetMvc-Version": "5.2", "X-Backend-Server": "app-3.internal", "Via": "1.1 varnish",
    "X-Runtime": "0.012",
}


class _Backend(BaseHTTPRequestHandler):
    """A backend: answers `name` in the body, records (path, fields, peer) per request and the
    connections it accepted; the query says what else to answer: location=PATH (a 302 to this
    backend's own absolute URL), slow=SECONDS, status=N, cc=Cache-Control."""

    protocol_version = "HTTP/1.1"
    name = "?"
    seen: list
    connections: set
    lock = threading.Lock()
    release: threading.Event

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.seen.append((self.path, dict(self.headers.items()), self.client_address))
            self.connections.add(self.client_address)
        if "hold" in query:
            self.release.wait(10)
        body = f"{self.name} {url.path}".encode()
        status = int(query.get("status", "200"))
        self.send_response(302 if "location" in query else status)
        own = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        if "location" in query:
            self.send_header("Location", own + query["location"])
            self.send_header("Content-Location", own + "/content")
            self.send_header("Refresh", f"5; url={own}/later")
        for key, value in IDENTIFYING.items():
            self.send_header(key, value)
        if "cc" in query:
            self.send_header("Cache-Control", query["cc"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET
    do_DELETE = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        with self.lock:
            self.seen.append((self.path, dict(self.headers.items()), self.client_address))
        body = f"{self.name} got {len(data)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class Backend:
    """One running backend (see _Backend); `stop()` closes its port, `start()` again on it."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.handler = type(name, (_Backend,), {
            "name": name, "seen": [], "connections": set(), "release": threading.Event()})
        self._host, self._port = host, port
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        self.server = ThreadingHTTPServer((self._host, self._port), self.handler)
        self.server.daemon_threads = True
        self._port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def seen(self) -> list:
        return self.handler.seen
