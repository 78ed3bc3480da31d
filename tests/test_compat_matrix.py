"""The client compatibility matrix (issue 16): real clients through the proxy, each way in
(HTTP proxy forwarding, HTTPS through CONNECT, SOCKS5), against real servers (nginx, an
aiohttp.web application, and the raw-bytes origin of tests/rawserver.py for a response only a
lenient reader takes). Each cell is one test, `test_cell[CLIENT-WAY-SERVER]`; docs/compatibility.md
shows the matrix and names each cell's test, which the last test here checks.

A cell passes when the client got what the server sent, and the proxy's log shows the
connection went through it the way the cell names. Where the proxy reads the request (the HTTP
way), the client's X-Forwarded-For never reaches the server; through a tunnel (CONNECT, SOCKS5)
the proxy carries the client's bytes unread, and the server sees the header the client sent.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import DIRECT
from helpers import wait_until
from matrixclients import CLIENTS, fetch_chromium
from proxies import ROOT, launch_in_process
from rawserver import start_raw_server
from realservers import COMMITTED, ECHO, WHEEL, aiohttp_server, certificate, docroot, nginx

CLIENT_ORDER = ("curl", "wget", "requests", "httpx", "urllib3", "aiohttp", "aiohttp-ws", "git",
                "pip", "chromium")
WAYS = ("http", "https", "socks5")
SERVERS = ("nginx", "aiohttp", "raw")
# what the proxy's log line for the connection starts with, by way
LOGGED = {"http": "http", "https": "connect", "socks5": "socks5"}

# The raw origin's answer: bare LF line ends, a space before a colon and one Content-Length
# twice, which the proxy normalizes (tests/test_compat.py has each case on its own).
EDGE = b"HTTP/1.1 200 OK\nX-A : 1\nContent-Length: 5\nContent-Length: 5\n\nhello"


def applies(client: str, way: str, server: str) -> bool:
    """Whether the cell exists: the raw origin only where the proxy reads the response (the
    HTTP way; a tunnel hands its bytes to the client's own parser), wget has no SOCKS, the
    WebSocket only on aiohttp, git and pip need files (nginx, aiohttp)."""
    if server == "raw" and (way != "http" or client in ("aiohttp-ws", "git", "pip")):
        return False
    if client == "wget" and way == "socks5":
        return False
    return not (client == "aiohttp-ws" and server != "aiohttp")


CELLS = [f"{c}-{w}-{s}" for c in CLIENT_ORDER for w in WAYS for s in SERVERS if applies(c, w, s)]
# cells that fail because of the proxy, each with its reason (xfail, strict: a fix shows)
XFAIL: dict[str, str] = {}


def _path(client: str, way: str) -> tuple[str, str]:
    """The path a client fetches on nginx or aiohttp, and what it must get."""
    if client == "aiohttp-ws":
        return "/ws", "echo one"
    if client == "git":
        return "/repo.git", COMMITTED
    if client == "pip":
        return "/simple/", WHEEL
    return "/echo", ECHO.format(xff="" if way == "http" else "1.2.3.4", via="", forwarded="")


# -- the proxy and the servers, one each for the module ----------------------------------------

@pytest.fixture(scope="module")
def matrix_proxy(tmp_path_factory):
    proxy = launch_in_process(tmp_path_factory.mktemp("proxy"), DIRECT, "matrix")
    yield proxy
    proxy.stop()
    assert not proxy.problems, "\n".join(proxy.problems)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    return certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return docroot(tmp_path_factory.mktemp("docroot"))


@pytest.fixture(scope="module")
def nginx_origin(tmp_path_factory, root, tls_files):
    yield from nginx(tmp_path_factory.mktemp("nginx"), root, *tls_files)


@pytest.fixture(scope="module")
def aiohttp_origin(root, tls_files):
    yield from aiohttp_server(root, *tls_files)


@pytest.fixture(scope="module")
def raw_origin():
    raw = start_raw_server()
    raw.script("edge", EDGE, "keep")
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()


def _marks(cell: str) -> list:
    marks = []
    if cell.startswith("chromium-"):
        marks.append(pytest.mark.browser)
    if cell in XFAIL:
        marks.append(pytest.mark.xfail(reason=XFAIL[cell], strict=True))
    return marks


@pytest.mark.parametrize("cell", [pytest.param(c, id=c, marks=_marks(c)) for c in CELLS])
def test_cell(request, matrix_proxy, tls_files, cell):
    client, way, server = cell.rsplit("-", 2)
    if server == "raw":
        origin = request.getfixturevalue("raw_origin")
        url, expected, port = origin.url("/raw/edge"), "hello", origin.port
    else:
        origin = request.getfixturevalue(f"{server}_origin")
        path, expected = _path(client, way)
        url = origin.url(path, tls=way == "https")
        port = origin.https_port if way == "https" else origin.http_port
        if client == "aiohttp-ws":
            url = url.replace("http", "ws", 1)
    needle = f"{LOGGED[way]} 127.0.0.1:{port} exit=direct"
    before = matrix_proxy.log().count(needle)
    if client == "chromium":
        got = fetch_chromium(request.getfixturevalue("browser"), way, url, matrix_proxy)
    else:
        got = CLIENTS[client](way, url, matrix_proxy, tls_files[0])
    assert got == expected
    # (a tunnel's line is written when both ends have closed: a TLS close handshake through it
    # can take a while on a loaded machine)
    assert wait_until(lambda: matrix_proxy.log().count(needle) > before, timeout=30), \
        f"no '{needle}' in the proxy's log: the client went around the proxy"


# -- the doc shows the matrix ------------------------------------------------------------------

DOC = ROOT / "docs" / "compatibility.md"
CELL = re.compile(r"(✗ )?`([a-z0-9-]+-(?:http|https|socks5)-(?:nginx|aiohttp|raw))`")


def test_every_cell_the_doc_shows_is_a_test_here():
    """docs/compatibility.md names each cell's test id, and marks with ✗ the cells expected
    to fail: the same cells, and the same failures, as this file has."""
    shown = CELL.findall(DOC.read_text())
    assert sorted(cell for _, cell in shown) == sorted(CELLS)
    assert {cell for failing, cell in shown if failing} == set(XFAIL)
