"""Real origin servers for the compatibility matrix (tests/test_compat_matrix.py): nginx (from
Debian) and an aiohttp.web application, each on loopback over HTTP and HTTPS (one self-signed
certificate, made by tests/tlsorigin.py), serving the same document root.

The document root holds what the clients of the matrix fetch:
  /echo              (a route, not a file) text naming the identifying headers the server
                     received: "xff=[...] via=[...] forwarded=[...]"
  /ws                (aiohttp only) a WebSocket that answers each text message "echo " + it
  /repo.git/         a bare git repository with one commit, for git's dumb HTTP protocol
                     (`git update-server-info` done)
  /simple/           a PEP 503 simple index holding one small wheel, built here by hand
                     (matrixpkg 1.0), for pip

Nothing here reaches beyond loopback; each server is stopped when its generator ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tlsorigin import tls_origin_in
from upstreams import free_port, wait_listening

ECHO = "xff=[{xff}] via=[{via}] forwarded=[{forwarded}]\n"
COMMITTED = "committed through the matrix\n"  # the one file of the repository's one commit
WHEEL = "matrixpkg-1.0-py3-none-any.whl"


@dataclass(frozen=True)
class Server:
    """One origin: its name in the matrix and its two loopback ports."""

    name: str
    http_port: int
    https_port: int

    def url(self, path: str, tls: bool = False) -> str:
        if tls:
            return f"https://127.0.0.1:{self.https_port}{path}"
        return f"http://127.0.0.1:{self.http_port}{path}"


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: tests/tlsorigin.py's, whose
    recording origin is stopped again at once (only the files are wanted)."""
    made = tls_origin_in(folder, "anonproxy matrix origin")
    _, cert_file = next(made)
    next(made, None)  # the rest of the generator: its origin shut down
    return cert_file, folder / "origin.key"


def docroot(folder: Path) -> Path:
    """The document root both servers serve: a bare git repository and a simple index."""
    root = folder / "docroot"
    root.mkdir()
    _git_repository(folder / "work", root / "repo.git")
    _simple_index(root / "simple")
    return root


def _git_repository(work: Path, bare: Path) -> None:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work.parent), "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "matrix", "GIT_AUTHOR_EMAIL": "matrix@example.invalid",
           "GIT_COMMITTER_NAME": "matrix", "GIT_COMMITTER_EMAIL": "matrix@example.invalid"}
    if shutil.which("git") is None:
        return  # the git cells skip themselves

    def git(*args: str, cwd: Path) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    work.mkdir()
    git("init", "-q", "-b", "main", ".", cwd=work)
    (work / "README").write_text(COMMITTED)
    git("add", "README", cwd=work)
    git("commit", "-q", "-m", "one commit", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=work.parent)
    git("update-server-info", cwd=bare)


def _simple_index(simple: Path) -> None:
    """A PEP 503 index of one project whose one file is a minimal pure-Python wheel."""
    project = simple / "matrixpkg"
    project.mkdir(parents=True)
    files = {
        "matrixpkg/__init__.py": "VERSION = '1.0'\n",
        "matrixpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: matrixpkg\nVersion: 1.0\n",
        "matrixpkg-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: anonproxy-tests\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(f"{name},,\n" for name in files) + "matrixpkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(project / WHEEL, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("matrixpkg-1.0.dist-info/RECORD", record)
    digest = hashlib.sha256((project / WHEEL).read_bytes()).hexdigest()
    (project / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{WHEEL}#sha256={digest}">{WHEEL}</a></body></html>\n')
    (simple / "index.html").write_text(
        '<!DOCTYPE html><html><body><a href="matrixpkg/">matrixpkg</a></body></html>\n')


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    """upstreams.wait_listening, nginx stopped and its error log told when it fails."""
    try:
        wait_listening("127.0.0.1", port, process)
    except RuntimeError:
        process.kill()
        raise RuntimeError(
            f"nginx did not start: {log.read_text() if log.exists() else ''}") from None


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ text/html html; text/plain txt; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{http};
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        location = /echo {{
            default_type text/plain;
            return 200 "{echo}";
        }}
    }}
}}
"""


def nginx(folder: Path, root: Path, cert: Path, key: Path) -> Iterator[Server]:
    """nginx in the foreground, one process as this user, on two free loopback ports."""
    binary = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if binary is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    folder.mkdir(exist_ok=True)
    http, https = free_port("127.0.0.1"), free_port("127.0.0.1")
    echo = ECHO.format(xff="$http_x_forwarded_for", via="$http_via",
                       forwarded="$http_forwarded").replace("\n", "\\n")
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, http=http, https=https, cert=cert, key=key,
                                      root=root, echo=echo))
    log = folder / "error.log"
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(conf), "-e", str(log)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(http, process, log)
        _wait_listening(https, process, log)
        yield Server("nginx", http, https)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _application(root: Path):
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=ECHO.format(xff=request.headers.get("X-Forwarded-For", ""),
                                             via=request.headers.get("Via", ""),
                                             forwarded=request.headers.get("Forwarded", "")))

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str("echo " + message.data)
        return ws

    async def files(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["tail"]).resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/{tail:.*}", files)
    return app


def aiohttp_server(root: Path, cert: Path, key: Path) -> Iterator[Server]:
    """The aiohttp.web application on its own event loop in a thread, over HTTP and HTTPS."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(_application(root.resolve()))

    async def start() -> tuple[int, int]:
        await runner.setup()
        ports = []
        for tls in (None, context):
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return ports[0], ports[1]

    http, https = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, name="aiohttp origin", daemon=True)
    thread.start()
    try:
        yield Server("aiohttp", http, https)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
