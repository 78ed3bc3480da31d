"""The real clients of the compatibility matrix (tests/test_compat_matrix.py), each driven the
way its users drive it through a proxy: curl, wget, git and pip as programs; requests, httpx,
urllib3 and aiohttp (HTTP and WebSocket, SOCKS5 through aiohttp-socks) in this process;
Chromium through Playwright.

Each client is one function `(way, url, proxy, ca) -> what it got`: `way` is "http" (the proxy
forwards an absolute-form request), "https" (CONNECT, the origin's certificate trusted by the
client's own CA option) or "socks5" (names handed to the proxy: socks5h where a client spells
it so). Every client sends `X-Forwarded-For: 1.2.3.4` where it can send a header of its own.
Programs run with an environment of their own: no *_proxy variables, no pip or git
configuration of this machine's, so nothing but the proxy given is used and nothing but
loopback is reached.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import curl

SPOOFED = {"X-Forwarded-For": "1.2.3.4"}
HEADER = "X-Forwarded-For: 1.2.3.4"


def proxy_url(way: str, proxy, scheme: str = "socks5h") -> str:
    return f"{scheme}://127.0.0.1:{proxy.port}" if way == "socks5" else proxy.url


def environment(home: Path) -> dict[str, str]:
    """This process's environment without proxy, pip, git and CA bundle settings (requests
    takes REQUESTS_CA_BUNDLE over pip's --cert), HOME elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not (k.lower().endswith("_proxy") or k.startswith(("PIP_", "GIT_", "SSL_CERT_"))
                   or k.endswith("_CA_BUNDLE"))}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               PIP_CONFIG_FILE=os.devnull)
    return env


def run(argv: list[str], home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None and not os.path.isabs(argv[0]):
        pytest.skip(f"{argv[0]} is not installed (scripts/test installs it)")
    out = subprocess.run(argv, capture_output=True, timeout=timeout, env=environment(home))
    assert out.returncode == 0, (out.stdout + out.stderr).decode(errors="replace")[-3000:]
    return out


def fetch_curl(way: str, url: str, proxy, ca: Path) -> str:
    how = {"http": ["--proxy", proxy.url], "https": ["--proxy", proxy.url, "--cacert", str(ca)],
           "socks5": ["--socks5-hostname", f"127.0.0.1:{proxy.port}"]}[way]
    out = curl("--fail", "--max-time", "20", "-H", HEADER, *how, url)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def fetch_wget(way: str, url: str, proxy, ca: Path) -> str:
    assert way != "socks5"  # wget speaks no SOCKS
    with tempfile.TemporaryDirectory() as home:
        out = run(["wget", "-q", "-O", "-", "--tries=1", "--timeout=20", "-e", "use_proxy=on",
                   "-e", f"http_proxy={proxy.url}", "-e", f"https_proxy={proxy.url}",
                   f"--ca-certificate={ca}", "--header", HEADER, url], Path(home))
    return out.stdout.decode()


def fetch_requests(way: str, url: str, proxy, ca: Path) -> str:
    import requests

    through = proxy_url(way, proxy)
    with requests.Session() as session:
        session.trust_env = False
        answer = session.get(url, headers=SPOOFED, proxies={"http": through, "https": through},
                             verify=str(ca), timeout=20)
    answer.raise_for_status()
    return answer.text


def fetch_httpx(way: str, url: str, proxy, ca: Path) -> str:
    import httpx

    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(proxy=proxy_url(way, proxy, "socks5"), verify=context, trust_env=False,
                      timeout=20) as client:
        answer = client.get(url, headers=SPOOFED)
    answer.raise_for_status()
    return answer.text


def fetch_urllib3(way: str, url: str, proxy, ca: Path) -> str:
    import urllib3

    if way == "socks5":
        from urllib3.contrib.socks import SOCKSProxyManager
        manager: urllib3.PoolManager = SOCKSProxyManager(proxy_url(way, proxy), timeout=20.0)
    else:
        manager = urllib3.ProxyManager(proxy.url, cert_reqs="CERT_REQUIRED", ca_certs=str(ca),
                                       timeout=20.0)
    with manager:
        answer = manager.request("GET", url, headers=SPOOFED, retries=False)
    assert answer.status == 200, answer.status
    return answer.data.decode()


async def _aiohttp_session(way: str, proxy):
    import aiohttp

    if way == "socks5":
        from aiohttp_socks import ProxyConnector
        connector = ProxyConnector.from_url(proxy_url(way, proxy, "socks5"), rdns=True)
        return aiohttp.ClientSession(connector=connector, trust_env=False), None
    return aiohttp.ClientSession(trust_env=False), proxy.url


def fetch_aiohttp(way: str, url: str, proxy, ca: Path) -> str:
    async def get() -> str:
        session, through = await _aiohttp_session(way, proxy)
        async with session, session.get(url, proxy=through, headers=SPOOFED,
                                        ssl=ssl.create_default_context(cafile=str(ca))) as answer:
            answer.raise_for_status()
            return await answer.text()
    return asyncio.run(get())


def fetch_aiohttp_ws(way: str, url: str, proxy, ca: Path) -> str:
    """A WebSocket round trip: `url` is the origin's /ws as ws:// (wss:// for "https")."""
    async def round_trip() -> str:
        session, through = await _aiohttp_session(way, proxy)
        async with session, session.ws_connect(
                url, proxy=through, headers=SPOOFED,
                ssl=ssl.create_default_context(cafile=str(ca))) as ws:
            await ws.send_str("one")
            data = (await ws.receive(timeout=20)).data
        # aiohttp's own advice for TLS connections: let them close before the loop does (or
        # the socket stays open until collected, and so does the proxy's tunnel)
        await asyncio.sleep(0.25)
        return data
    return asyncio.run(round_trip())


def fetch_git(way: str, url: str, proxy, ca: Path) -> str:
    """`git clone` of /repo.git/ (dumb HTTP) with http.proxy; the clone's one file."""
    with tempfile.TemporaryDirectory() as home:
        run(["git", "-c", f"http.proxy={proxy_url(way, proxy)}", "-c", f"http.sslCAInfo={ca}",
             "-c", f"http.extraHeader={HEADER}", "clone", "-q", url, f"{home}/clone"], Path(home))
        return Path(home, "clone", "README").read_text()


def fetch_pip(way: str, url: str, proxy, ca: Path) -> str:
    """`pip download` of matrixpkg from the /simple/ index `url` names (--index-url only, no
    cache, no configuration: nothing but this index); the file it saved."""
    with tempfile.TemporaryDirectory() as home:
        run([sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--no-cache-dir",
             "--disable-pip-version-check", "--retries", "0", "--timeout", "20",
             "--index-url", url, "--proxy", proxy_url(way, proxy), "--cert", str(ca),
             "--dest", f"{home}/got", "matrixpkg"], Path(home), timeout=120)
        return " ".join(sorted(p.name for p in Path(home, "got").iterdir()))


def fetch_chromium(browser, way: str, url: str, proxy) -> str:
    """One page load in a fresh Playwright context whose proxy is ours (Playwright takes
    loopback out of Chromium's implicit bypass list); the origin's certificate is accepted by
    ignore_https_errors, Playwright's only CA option."""
    context = browser.new_context(proxy={"server": proxy_url(way, proxy, "socks5")},
                                  ignore_https_errors=True, extra_http_headers=SPOOFED)
    try:
        page = context.new_page()
        answer = page.goto(url, timeout=20_000)
        assert answer is not None and answer.status == 200
        return answer.text()
    finally:
        context.close()


CLIENTS = {"curl": fetch_curl, "wget": fetch_wget, "requests": fetch_requests,
           "httpx": fetch_httpx, "urllib3": fetch_urllib3, "aiohttp": fetch_aiohttp,
           "aiohttp-ws": fetch_aiohttp_ws, "git": fetch_git, "pip": fetch_pip}
