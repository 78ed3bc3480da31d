"""The dashboard in a real browser: Playwright drives Debian's headless Chromium (its own
executable, no browser download). The browser logs in with a one-time login link (as `serve`
prints), and a context without the session cookie sees only the login form. With curl traffic flowing
through the proxy and a managed tor on the private Tor network (tests/tornet.py), the page must
show the exits and a rising connection count, and clicking reload and new identity must
visibly take effect. A screenshot is saved to build/screenshots/dashboard.png (the README's
picture comes from there)."""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import ROOT
from helpers import curl, dashboard_login_url
from upstreams import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NAME = "origin.tor.test"  # resolvable only by the test network's exits
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps"]
SCREENSHOT = ROOT / "build" / "screenshots" / "dashboard.png"


@pytest.fixture
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def traffic(origin):
    """curl through the proxy to the origin, by a name only the Tor exits can resolve, until
    the test ends."""
    stop = threading.Event()
    done = []

    def start(proxy):
        def loop():
            while not stop.is_set():
                out = curl("-x", proxy.url, origin.url("/echo", host=NAME), timeout=60)
                done.append(out.returncode)
                stop.wait(0.3)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return done

    yield start
    stop.set()


class OtherPort:
    """What another local account can run: an HTTP server on 127.0.0.1:<its own port>. Its page
    fetches its own origin (same-site with the dashboard: cookies and SameSite ignore ports),
    and every request's headers are recorded. /start, reached as localhost, sends the browser
    on to it, as any web page can."""

    PAGE = b"<!doctype html><script>fetch('/collect')</script>"

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                received.append((self.path, dict(self.headers)))
                port = self.server.server_address[1]
                body = {"/": OtherPort.PAGE, "/start": b"<!doctype html><script>location="
                        b"'http://127.0.0.1:%d/'</script>" % port}.get(self.path, b"ok")
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def request(self, path: str) -> dict | None:
        return next((headers for p, headers in self.received if p == path), None)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _number(page, selector: str) -> int:
    return int(page.text_content(selector) or "0")


def _wait_until(condition, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_browser_logs_in_with_the_one_time_link_and_without_it_sees_only_the_login_form(
        start_proxy, browser, origin, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    admin_port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{admin_port}/"
    proxy = start_proxy(f'admin = "127.0.0.1:{admin_port}"\ndefault = "direct"\n'
                        '[exits.direct]\n')
    site = f"127.0.0.1:{origin.port}"
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0  # history exists
    elsewhere = browser.new_context()  # no session cookie
    stranger = elsewhere.new_page()
    response = stranger.goto(base)
    assert response.status == 401
    stranger.wait_for_selector('form#login input[name="token"]')
    assert stranger.query_selector("#exits") is None and site not in stranger.content()
    url = dashboard_login_url(proxy)

    owner = browser.new_context()
    page = owner.new_page()
    page.goto(url)
    page.wait_for_selector(f'#recent tbody tr:has-text("{site}")')
    assert page.url == base  # redirected: the login token left the address bar
    assert page.text_content("#profile") == "test"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    [cookie] = owner.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    page.click("#btn-reload")  # the page's own changes pass the cookie and header checks
    page.wait_for_selector('#message:has-text("reloaded profile test")')

    used = stranger.goto(url)  # the link worked once
    assert used.status == 403 and "used already" in stranger.content()
    assert elsewhere.cookies() == []
    token = (tmp_path / "run" / "anonproxy" / f"admin-127.0.0.1-{admin_port}.token").read_text()
    stranger.fill('input[name="token"]', token.strip())  # the owner pasting the token
    stranger.click('button[type="submit"]')
    stranger.wait_for_selector(f'#recent tbody tr:has-text("{site}")')


def test_the_cookie_a_page_on_another_port_receives_is_no_pass_to_the_dashboard(
        start_proxy, browser, origin, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    admin_port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{admin_port}"
    proxy = start_proxy(f'admin = "127.0.0.1:{admin_port}"\ndefault = "direct"\n'
                        '[exits.direct]\n')
    (tmp_path / "blocking.toml").write_text('default = "block"\n[exits.direct]\n')
    site = f"127.0.0.1:{origin.port}"
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0  # history exists
    owner = browser.new_context()
    page = owner.new_page()
    streams = []
    page.on("request", lambda r: streams.append(r.headers) if r.url == base + "/api/events"
            else None)
    page.goto(dashboard_login_url(proxy))
    page.wait_for_selector(f'#recent tbody tr:has-text("{site}")')
    assert page.url == base + "/"  # neither login token nor page key in the address bar

    other = OtherPort()
    try:
        visit = owner.new_page()
        visit.goto(f"http://localhost:{other.port}/start")  # any page can send us there
        _wait_until(lambda: other.request("/collect") is not None, 10, "the page's fetch")
        stolen = other.request("/collect")
        assert other.request("/").get("Cookie") is None  # a cross-site navigation: Strict
        assert f"anonproxy-{admin_port}=" in stolen["Cookie"]  # ...but its own fetch: the leak
        assert visit.evaluate("localStorage.length") == 0  # the page key stays on its origin
    finally:
        other.stop()
    replay = {k: v for k, v in stolen.items() if k.lower() != "host"}
    replay |= {"X-Anonproxy-Request": "1", "Origin": base}  # what a client can add anyway
    with requests.Session() as outside:
        outside.trust_env = False
        for path in ("/api/connections", "/api/state", "/api/status", "/api/events"):
            answer = outside.get(base + path, headers=replay, timeout=10)
            assert answer.status_code == 401 and site not in answer.text, (path, answer.text)
        switch = outside.post(base + "/api/profile", json={"profile": "blocking"},
                              headers=replay, timeout=10)
        assert switch.status_code == 401, switch.text

    cookie_only = browser.new_context()  # a browser with the cookie but not the key
    cookie_only.add_cookies(owner.cookies())
    shell = cookie_only.new_page()
    answers = []
    shell.on("response", lambda r: answers.append(r.status) if "/api/" in r.url else None)
    shell.goto(base + "/")
    shell.wait_for_url(base + "/login")  # the shell's script found no key: the login form
    shell.wait_for_selector('form#login input[name="token"]')
    assert 200 not in answers and site not in shell.content()
    cookie_only.close()

    page.reload()  # the key is kept (localStorage), and the page gets data, live ticks...
    page.wait_for_selector(f'#recent tbody tr:has-text("{site}")')
    page.wait_for_selector("#live.on")
    assert page.text_content("#profile") == "test"
    assert streams and all(h.get("x-anonproxy-session") for h in streams)
    page.click("#btn-reload")  # ...and its buttons work
    page.wait_for_selector('#message:has-text("reloaded profile test")')
    page.wait_for_selector('#reloads:text-is("1")')


@pytest.mark.tor
def test_dashboard_in_chromium_shows_traffic_and_reload_and_new_identity_take_effect(
        start_proxy, tornet, browser, traffic, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy(
        f'admin = "127.0.0.1:{admin_port}"\ndefault = "de"\n'
        f'[exits.de]\ntor = {{ control = "managed", countries = ["de"], '
        f'torrc = "{tornet.client_torrc}" }}\n'
        '[exits.direct]\n'
        '[[rules]]\ndomains = ["tracker.example"]\nexit = "block"\n'
        '[limits]\nconnect_timeout = 20\n')
    _wait_until(lambda: ": ready, SOCKS on" in proxy.log(), 120, "tor to bootstrap")
    done = traffic(proxy)
    _wait_until(lambda: done.count(0) >= 1, 90, "a first request through Tor")

    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{admin_port}/")
            else problems.append(f"request outside the dashboard: {r.url}"))
    page.goto(dashboard_login_url(proxy))

    # exits, rules and Tor state are there
    page.wait_for_selector('#exits tr[data-exit="de"]')
    assert "tor" in page.text_content('#exits tr[data-exit="de"]')
    assert "ready" in page.text_content('#exits tr[data-exit="de"]')
    page.wait_for_selector("#tor table.circuits tbody tr")
    assert "exits seen in DE" in page.text_content("#tor")
    assert page.text_content("#profile") == "test"

    # the connection count rises while traffic flows (live updates)
    first = _number(page, "#connections-total")
    _wait_until(lambda: _number(page, "#connections-total") >= first + 3, 60,
                "the connection count to rise")
    page.wait_for_selector("#live.on")
    page.wait_for_selector(f'#recent tbody tr:has-text("{NAME}")')
    assert "?" not in page.text_content("#recent") or "/echo" not in page.text_content("#recent")
    hits = int(page.text_content('#rules tr[data-rule="0"] .hits'))
    assert hits >= 1

    # reload: a rule added to the file appears once the button is clicked
    path = tmp_path / "test.toml"
    path.write_text(path.read_text().replace(
        '[[rules]]\n', '[[rules]]\ndomains = ["added.example"]\nexit = "block"\n[[rules]]\n', 1))
    assert "added.example" not in page.text_content("#rules")
    page.click("#btn-reload")
    page.wait_for_selector('#message:has-text("reloaded profile test")')
    page.wait_for_selector('#rules:has-text("added.example")')
    assert page.text_content("#reloads") == "1"

    # new identity: the proxy makes one, and new circuits appear for the traffic that follows
    before = set(page.eval_on_selector_all("#tor tr[data-circuit]",
                                           "rows => rows.map(r => r.dataset.circuit)"))
    page.click("#btn-newnym")
    page.wait_for_selector('#message:has-text("new identity for every site")', timeout=30000)
    page.wait_for_selector('#identities:text-is("1")')  # the page refreshes after the message
    _wait_until(lambda: set(page.eval_on_selector_all(
        "#tor tr[data-circuit]", "rows => rows.map(r => r.dataset.circuit)")) - before, 60,
        "a new circuit after the new identity")
    assert "new identity" in proxy.wait_log("new identity")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []
