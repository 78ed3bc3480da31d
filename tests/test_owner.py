"""Owner only: another local account can neither read nor steer the proxy's dashboard, API or
runtime files, and no way of giving the proxy an address makes it an open proxy.

The multi-user tests are run as two real local users: the suite runs as root and starts the
proxy as root; a real system account (`anonproxy-other`, created here if missing) then tries
every route with /usr/bin/curl and the runtime directory with /bin/ls and /bin/cat. The
runtime directory's parent is a fresh world-traversable directory under /tmp, so what keeps
the other account out is the runtime directory's own mode, not a private parent.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from helpers import curl, dashboard_login_url, serving
from upstreams import free_port

from anonproxy.inbound.peer_account import REMOTE, UNKNOWN, PeerAccounts
from anonproxy.wire.address import Address

OTHER = "anonproxy-other"
ROUTES = [
    ("GET", "/"), ("GET", "/api/status"), ("GET", "/api/exits"), ("GET", "/api/rules"),
    ("GET", "/api/connections"), ("GET", "/api/tor"), ("GET", "/api/state"),
    ("GET", "/api/events"), ("POST", "/api/reload"), ("POST", "/api/profile"),
    ("POST", "/api/newnym"), ("DELETE", "/api/connections"), ("POST", "/api/login-token"),
    ("GET", "/%61pi/state"), ("GET", "//api/state"), ("GET", "/api/state/"),  # other spellings
]


@pytest.fixture(scope="session")
def other_user() -> tuple[int, int]:
    """A second real local account (uid, gid)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and become a second local user")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is missing, so no second local user can be made")
    try:
        entry = pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OTHER], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(OTHER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def run_dir(monkeypatch):
    """XDG_RUNTIME_DIR for this test: fresh, and world-traversable like /run/user/UID's
    parents (pytest's tmp_path sits in a 0700 directory, which would hide everything)."""
    path = Path(tempfile.mkdtemp(prefix="anonproxy-run-", dir="/tmp"))
    path.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_other(user: tuple[int, int], *argv: str) -> subprocess.CompletedProcess:
    uid, gid = user
    return subprocess.run(argv, user=uid, group=gid, extra_groups=[], cwd="/",
                          env={"PATH": "/usr/bin:/bin", "LANG": "C"},
                          capture_output=True, timeout=30)


def _profile(admin_port: int, extra: str = "") -> str:
    return f'admin = "127.0.0.1:{admin_port}"\ndefault = "direct"\n{extra}[exits.direct]\n'


def _token(run: Path, admin_port: int) -> str:
    return (run / "anonproxy" / f"admin-127.0.0.1-{admin_port}.token").read_text().strip()


def _owner(token: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers["X-Anonproxy-Token"] = token
    return session


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _serve_refused(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run serve expecting it to refuse: its exit and stderr; fails the test if it starts."""
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile), *args],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            line = process.stdout.readline()  # "" when it exits without listening
            assert not line.startswith("anonproxy listening on"), f"serve started: {line}"
            code = process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        err.seek(0)
        return subprocess.CompletedProcess(process.args, code, "", err.read())


# -- another local account ---------------------------------------------------------------------

def test_other_user_cannot_read_or_steer_the_dashboard(other_user, run_dir, start_proxy_process,
                                                       origin):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy_process(_profile(admin_port))
    base = f"http://127.0.0.1:{admin_port}"
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0  # history exists
    token = _token(run_dir, admin_port)
    owner = _owner(token)
    site = f"127.0.0.1:{origin.port}"
    assert owner.get(base + "/api/connections", timeout=10).json()[0]["site"] == site
    bodies = []
    for method, path in ROUTES:
        out = as_other(other_user, "/usr/bin/curl", "-s", "--path-as-is", "--noproxy", "*",
                       "--max-time", "5",
                       "-X", method, "-H", "Content-Type: application/json",
                       *(["--data", '{"profile": "direct"}'] if method != "GET" else []),
                       "-w", "\n%{http_code}", base + path)
        body, _, code = out.stdout.decode().rpartition("\n")
        assert code in ("401", "403"), (method, path, code, body)
        for secret in (token, site, "connections_total", '"exit"'):
            assert secret not in body, (method, path, body)
        bodies.append(body)
    login = dashboard_login_url(proxy)  # a valid login token exists too: never shown to anyone else
    assert not [b for b in bodies if login.rsplit("=", 1)[1] in b]
    for attempt in (f"{base}/login?token=guess", f"{base}/login"):
        out = as_other(other_user, "/usr/bin/curl", "-s", "--noproxy", "*", "-i",
                       *(["--data", "token=guess"] if attempt.endswith("/login") else []),
                       attempt)
        assert b"Set-Cookie" not in out.stdout and b" 403 " in out.stdout, out.stdout

    status = owner.get(base + "/api/status", timeout=10).json()
    assert (status["profile"], status["reloads"], status["identities"]) == ("test", 0, 0)
    assert len(owner.get(base + "/api/connections", timeout=10).json()) == 1  # not cleared


def test_a_captured_session_cookie_alone_reads_and_steers_nothing(other_user, run_dir,
                                                                 start_proxy_process, origin,
                                                                 tmp_path):
    """Browsers send a cookie to every port of its host: a page another account serves on
    127.0.0.1:<any port> gets the dashboard's session cookie. With that cookie (and the request
    header and same Origin that it can forge) the other account reads and steers nothing."""
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy_process(_profile(admin_port))
    (tmp_path / "blocking.toml").write_text('default = "block"\n[exits.direct]\n')
    base = f"http://127.0.0.1:{admin_port}"
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0  # history exists
    site = f"127.0.0.1:{origin.port}"
    login = requests.get(dashboard_login_url(proxy), allow_redirects=False, timeout=10)
    assert login.status_code == 303
    name, value = f"anonproxy-{admin_port}", login.cookies[f"anonproxy-{admin_port}"]
    for method, path in ROUTES:
        out = as_other(other_user, "/usr/bin/curl", "-s", "--path-as-is", "--noproxy", "*",
                       "--max-time", "5", "-X", method, "-H", f"Cookie: {name}={value}",
                       "-H", "X-Anonproxy-Request: 1", "-H", f"Origin: {base}",
                       "-H", "Content-Type: application/json",
                       *(["--data", '{"profile": "blocking"}'] if method != "GET" else []),
                       "-w", "\n%{http_code}", base + path)
        body, _, code = out.stdout.decode().rpartition("\n")
        for secret in (site, "connections_total", '"exit"', '"token"'):
            assert secret not in body, (method, path, body)
        if path == "/":
            assert code == "200" and 'id="exits"' in body  # the page shell: no data in it
        else:
            assert code in ("401", "403"), (method, path, code, body)
    status = _owner(_token(run_dir, admin_port)).get(base + "/api/status", timeout=10).json()
    assert (status["profile"], status["reloads"], status["identities"]) == ("test", 0, 0)
    assert "blocking" in status["profiles"]  # the switch it tried was possible


def test_other_user_cannot_read_or_list_the_runtime_directory(other_user, run_dir,
                                                              start_proxy_process):
    admin_port = free_port("127.0.0.1")
    start_proxy_process(_profile(admin_port))
    folder = run_dir / "anonproxy"
    files = sorted(folder.iterdir())
    assert {f.suffix for f in files} == {".pid", ".admin", ".token", ".fetch"}
    listing = as_other(other_user, "/bin/ls", "-la", str(folder))
    assert listing.returncode != 0 and listing.stdout == b"", listing.stdout
    for path in files:
        read = as_other(other_user, "/bin/cat", str(path))
        assert read.returncode != 0 and read.stdout == b"", (path, read.stdout)


def test_runtime_files_are_owner_only(run_dir, start_proxy_process):
    admin_port = free_port("127.0.0.1")
    start_proxy_process(_profile(admin_port))
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"  # nobody runs there: the file stays
    _cli("newnym", "--site", "example.com", "--listen", listen)
    folder = run_dir / "anonproxy"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    files = list(folder.iterdir())
    assert {f.name.split("-")[0] for f in files} == {"serve", "admin", "newnym"}, files
    for path in files:
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid(), path


def test_a_world_readable_runtime_dir_is_tightened(run_dir, start_proxy_process):
    folder = run_dir / "anonproxy"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    old = folder / "serve-127.0.0.1-9.pid"  # as an older version left it
    old.write_text("1\n")
    old.chmod(0o644)
    proxy = start_proxy_process(_profile(free_port("127.0.0.1")))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o600
    assert "was mode 0755; made it 0700" in proxy.log()


def test_dashboard_command_without_a_running_proxy_says_so(run_dir):
    out = _cli("dashboard", "--print", "--listen", f"127.0.0.1:{free_port('127.0.0.1')}")
    assert out.returncode == 1 and "has no dashboard" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_runtime_dir_owned_by_another_user_is_refused(other_user, run_dir, tmp_path):
    folder = run_dir / "anonproxy"
    folder.mkdir(mode=0o700)
    os.chown(folder, *other_user)
    (tmp_path / "p.toml").write_text(_profile(free_port("127.0.0.1")))
    out = _serve_refused(tmp_path / "p.toml", "--listen", "127.0.0.1:0")
    assert out.returncode == 2, out.stderr
    assert f"belongs to uid {other_user[0]}, not to you" in out.stderr
    assert "Traceback" not in out.stderr and list(folder.iterdir()) == []


# -- the owner's way in --------------------------------------------------------------------------

def test_owner_logs_in_with_the_one_time_url_and_the_page_carries_no_token(run_dir, start_proxy):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy(_profile(admin_port))
    url = dashboard_login_url(proxy)
    base = f"http://127.0.0.1:{admin_port}"
    browser = requests.Session()
    browser.trust_env = False
    bare = browser.get(base + "/", timeout=10)
    assert bare.status_code == 401 and 'action="/login"' in bare.text
    assert 'id="exits"' not in bare.text

    first = browser.get(url, allow_redirects=False, timeout=10)
    assert first.status_code == 303 and first.headers["Location"].startswith("/#key=")
    key = first.headers["Location"].removeprefix("/#key=")
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert browser.cookies[f"anonproxy-{admin_port}"] not in (key, "")  # two secrets
    state = browser.get(base + "/api/state", headers={"X-Anonproxy-Session": key}, timeout=10)
    assert state.status_code == 200
    page = browser.get(base + "/", timeout=10)  # the shell: the script fetches the data
    assert page.status_code == 200 and 'id="exits"' in page.text
    for secret in (_token(run_dir, admin_port), key, "anonproxy-token", ">test<"):
        assert secret not in page.text


def test_a_page_key_works_only_with_its_own_sessions_cookie(run_dir, start_proxy_process):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy_process(_profile(admin_port))
    base, name = f"http://127.0.0.1:{admin_port}", f"anonproxy-{admin_port}"
    logins = [requests.get(url, allow_redirects=False, timeout=10) for url in
              (dashboard_login_url(proxy), _cli_login_url(proxy))]
    cookies = [login.cookies[name] for login in logins]
    keys = [login.headers["Location"].removeprefix("/#key=") for login in logins]

    def status(cookie: str, key: str) -> int:
        return requests.get(base + "/api/status", timeout=10, cookies={name: cookie},
                            headers={"X-Anonproxy-Session": key}).status_code

    assert [status(c, k) for c, k in zip(cookies, keys, strict=True)] == [200, 200]
    assert [status(c, k) for c, k in zip(cookies, reversed(keys), strict=True)] == [401, 401]
    assert status(cookies[0], "") == 401 and status(cookies[0], cookies[0]) == 401


def _cli_login_url(proxy) -> str:
    out = _cli("dashboard", "--print", "--listen", f"{proxy.host}:{proxy.port}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_login_link_works_once(run_dir, start_proxy):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy(_profile(admin_port))
    url = dashboard_login_url(proxy)
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 303
    again = requests.get(url, allow_redirects=False, timeout=10)
    assert again.status_code == 403 and "Set-Cookie" not in again.headers
    assert "used already or has expired" in again.text


def test_a_login_token_expires():
    from anonproxy.admin.login import Logins

    now = [1000.0]
    logins = Logins(login_ttl=600, clock=lambda: now[0])
    token, late = logins.new_login_token(), logins.new_login_token()
    now[0] += 599
    session = logins.redeem(token)
    assert session is not None and logins.session_ok(session.cookie, session.page_key)
    now[0] += 2
    assert logins.redeem(late) is None
    assert not logins.session_ok(session.cookie, "guess")
    assert not logins.session_ok("guess", session.page_key) and not logins.api_token_ok("guess")


def test_the_login_form_takes_the_api_token(run_dir, start_proxy):
    admin_port = free_port("127.0.0.1")
    start_proxy(_profile(admin_port))
    base = f"http://127.0.0.1:{admin_port}"
    wrong = requests.post(base + "/login", data={"token": "guess"}, allow_redirects=False,
                          timeout=10)
    assert wrong.status_code == 403 and "Set-Cookie" not in wrong.headers
    right = requests.post(base + "/login", data={"token": _token(run_dir, admin_port)},
                          allow_redirects=False, timeout=10)
    assert right.status_code == 303 and "HttpOnly" in right.headers["Set-Cookie"]


def test_cli_dashboard_status_reload_newnym_use_the_token(run_dir, start_proxy_process):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy_process(_profile(admin_port))
    listen = f"{proxy.host}:{proxy.port}"
    printed = _cli("dashboard", "--print", "--listen", listen)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith(f"http://127.0.0.1:{admin_port}/login?token=")
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 303
    assert _cli("status", "--listen", listen).returncode == 0
    assert "reloaded profile test" in _cli("reload", "--listen", listen).stdout
    assert "has no Tor exit" in _cli("newnym", "--listen", listen).stderr  # (it answered)
    (run_dir / "anonproxy" / f"admin-127.0.0.1-{admin_port}.token").write_text("guess\n")
    refused = _cli("status", "--listen", listen)
    assert refused.returncode == 1 and "401" in refused.stderr


def test_cross_site_post_with_the_session_cookie_is_refused(run_dir, start_proxy):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy(_profile(admin_port))
    base = f"http://127.0.0.1:{admin_port}"
    browser = requests.Session()
    browser.trust_env = False
    login = browser.get(dashboard_login_url(proxy), allow_redirects=False, timeout=10)
    key = login.headers["Location"].removeprefix("/#key=")
    plain = browser.post(base + "/api/reload", timeout=30)  # what a cross-site form can send
    assert plain.status_code == 401
    foreign = browser.post(base + "/api/reload", timeout=30, headers={
        "X-Anonproxy-Session": key, "Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]
    own = browser.post(base + "/api/reload", timeout=30, headers={
        "X-Anonproxy-Session": key, "Origin": base})
    assert own.status_code == 200, own.text
    status = browser.get(base + "/api/status", headers={"X-Anonproxy-Session": key}, timeout=10)
    assert status.json()["reloads"] == 1


# -- one listen check ------------------------------------------------------------------------------

@pytest.mark.parametrize("host, allow, auth, refused", [
    ("0.0.0.0", [], None, True),
    ("::", [], None, True),
    ("192.0.2.1", [], None, True),  # an interface's address
    ("127.0.0.1", [], None, False),
    ("::1", [], None, False),
    ("localhost", [], None, False),
    ("0.0.0.0", ["10.0.0.0/8"], None, False),
    ("::", [], ("me", "secret12"), False),
])
def test_listen_problems_refuse_beyond_loopback_without_allow_or_auth(host, allow, auth,
                                                                      refused):
    from anonproxy.config.profiles import listen_problems

    problems = listen_problems(Address(host, 0), allow, auth)
    assert bool(problems) == refused
    if refused:
        assert "open proxy" in problems[0] and "allow" in problems[0] and "auth" in problems[0]


@pytest.mark.parametrize("args", [
    ["--listen", "0.0.0.0:0"],
    ["--listen", "[::]:0"],
    ["--workers", "2", "--listen", "0.0.0.0:0"],
])
def test_serve_listen_beyond_loopback_needs_allow_or_auth(tmp_path, monkeypatch, args):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "p.toml").write_text('default = "direct"\n[exits.direct]\n')
    out = _serve_refused(tmp_path / "p.toml", *args)
    assert out.returncode == 2, out.stderr
    assert f"--listen {args[-1]}" in out.stderr and "open proxy" in out.stderr
    assert "allow = " in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("extra", [
    'allow = ["127.0.0.0/8"]\n',
    'auth = { username = "me", password = "secret-1234" }\n',
])
def test_serve_listen_beyond_loopback_starts_with_allow_or_auth(start_proxy_process, origin, extra):
    proxy = start_proxy_process(f'{extra}default = "direct"\n[exits.direct]\n', listen="0.0.0.0:0")
    user = ["-U", "me:secret-1234"] if "auth" in extra else []
    out = curl("-x", f"http://127.0.0.1:{proxy.port}", *user, origin.url("/echo"))
    assert out.returncode == 0 and origin.received


def test_a_reload_that_would_open_the_listener_is_refused(run_dir, start_proxy_process, origin,
                                                          tmp_path):
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy_process(_profile(admin_port, 'auth = { username = "me", password = '
                                                     '"secret-1234" }\n'), listen="0.0.0.0:0")
    path = tmp_path / "test.toml"
    path.write_text(_profile(admin_port))  # the same profile without auth
    answer = _owner(_token(run_dir, admin_port)).post(
        f"http://127.0.0.1:{admin_port}/api/reload", json={}, timeout=30)
    assert answer.status_code == 409 and "open proxy" in answer.json()["error"]
    proxy.process.send_signal(signal.SIGHUP)
    assert "reload failed, keeping the running profile" in proxy.wait_log("reload failed")
    no_credentials = curl("-i", "-x", f"http://127.0.0.1:{proxy.port}", origin.url("/echo"))
    assert no_credentials.stdout.startswith(b"HTTP/1.1 407"), no_credentials.stdout
    assert origin.received == []


def test_every_proxy_server_start_asks_the_listen_check(tmp_path):
    from anonproxy.config.profiles import LoadedProfile, ProfileError, parse_profile
    from anonproxy.runtime.server import ProxyServer

    profile = parse_profile({"default": "direct", "exits": {"direct": {}}}, "p")
    loaded = LoadedProfile("p", tmp_path / "p.toml", profile)

    async def start() -> None:
        server = ProxyServer(loaded, Address("0.0.0.0", 0))
        await server.start()
        await server.stop()

    with pytest.raises(ProfileError, match="open proxy"):
        asyncio.run(start())


def test_other_user_cannot_reach_the_control_socket(other_user, run_dir, start_proxy_process):
    """A serve without a dashboard answers its API on a unix socket in the runtime directory:
    0600 there, and another account cannot connect to it (nor list the directory)."""
    proxy = start_proxy_process('default = "direct"\n[exits.direct]\n')
    sockets = list((run_dir / "anonproxy").glob("*.sock"))
    assert len(sockets) == 1 and stat.S_IMODE(os.stat(sockets[0]).st_mode) == 0o600
    assert _cli("status", "--listen", f"{proxy.host}:{proxy.port}").returncode == 0
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(e.errno)\n"
             "else:\n    print('connected')\n")
    reached = as_other(other_user, "/usr/bin/python3", "-c", probe, str(sockets[0]))
    assert reached.stdout.strip() == b"13", reached  # EACCES


# -- the proxy port: the owner's programs only ----------------------------------------------------

class _Cacheable(BaseHTTPRequestHandler):
    """One page anyone may cache for 10 minutes; counts what reached it."""

    protocol_version = "HTTP/1.1"
    paths: list

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = b"what the owner read"
        self.send_response(200)
        self.send_header("Cache-Control", "public, max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _through(user, proxy, url: str, *args: str) -> tuple[str, bytes]:
    """(status code, head and body) of `url` fetched by /usr/bin/curl through `proxy`, run
    as `user` (None: as the owner)."""
    argv = ["/usr/bin/curl", "-s", "-i", "--max-time", "10", "-x", proxy.url, *args,
            "-w", "\n%{http_code}", url]
    out = as_other(user, *argv) if user else subprocess.run(argv, capture_output=True, timeout=30)
    answer, _, code = out.stdout.rpartition(b"\n")
    return code.decode(), answer


def test_owner_only_another_accounts_program_is_refused_at_the_proxy_port(other_user,
                                                                          start_proxy):
    """The threat: through the owner's port another account would leave by the owner's exits,
    and a cache hit would tell it what the owner fetched. Refused before anything is acted on:
    the origin sees nothing of it, the cache answers it nothing, the owner goes on."""
    handler = type("Handler", (_Cacheable,), {"paths": []})
    with serving(handler) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/visited"
        proxy = start_proxy('default = "direct"\n[cache]\nenabled = true\n[exits.direct]\n')
        assert _through(None, proxy, url)[0] == "200"
        code, answer = _through(None, proxy, url)
        assert code == "200" and b"\r\nAge: " in answer  # the owner's own hit
        assert handler.paths == ["/visited"]

        code, answer = _through(other_user, proxy, url)
        assert code == "403", answer
        assert b"serves only the programs of the account that runs it" in answer
        assert b"what the owner read" not in answer and b"Age:" not in answer
        socks = as_other(other_user, "/usr/bin/curl", "-s", "--max-time", "10",
                         "--socks5-hostname", f"{proxy.host}:{proxy.port}", url)
        assert socks.returncode != 0 and b"what the owner read" not in socks.stdout
        assert handler.paths == ["/visited"]  # nothing of theirs went out
        log = proxy.wait_log(f"uid {other_user[0]}")
        assert log.count(f"a program of another local account (uid {other_user[0]})") == 2
        assert _through(None, proxy, url)[0] == "200"  # the owner is still served


@pytest.mark.parametrize("shared_by", ["local_accounts", "auth"])
def test_the_owner_may_share_the_port_with_other_accounts(other_user, start_proxy, origin,
                                                          shared_by):
    extra = ('local_accounts = "any"\n' if shared_by == "local_accounts"
             else 'auth = { username = "family", password = "shared-secret" }\n')
    proxy = start_proxy(f'{extra}default = "direct"\n[exits.direct]\n')
    credentials = ["-U", "family:shared-secret"] if shared_by == "auth" else []
    code, answer = _through(other_user, proxy, origin.url("/echo"), *credentials)
    assert code == "200", answer
    if shared_by == "auth":  # the credentials decide, for every account
        assert _through(other_user, proxy, origin.url("/echo"))[0] == "407"
    assert len(origin.received) == 1


def test_a_reload_applies_local_accounts_to_the_next_connection(other_user, start_proxy, origin):
    proxy = start_proxy('local_accounts = "any"\ndefault = "direct"\n[exits.direct]\n')
    assert _through(other_user, proxy, origin.url("/echo"))[0] == "200"
    proxy.profile.write_text('default = "direct"\n[exits.direct]\n')  # back to the default
    assert proxy.in_loop(proxy.server.reload) is None
    assert _through(other_user, proxy, origin.url("/echo"))[0] == "403"
    assert len(origin.received) == 1


def test_the_kernel_names_the_account_of_a_loopback_client_and_none_for_others():
    """inbound/peer_account.py on real sockets: this account's client, a closed one (its
    socket keeps no account), and addresses no socket here has."""
    peers = PeerAccounts()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        ends = (accepted.getpeername(), accepted.getsockname())
        assert peers.account(*ends) == os.geteuid()
        assert peers.stranger(*ends) is None
        client.close()
        assert peers.account(*ends) == UNKNOWN
        assert "names no account" in peers.stranger(*ends)
        nobody = (("127.0.0.1", 1), accepted.getsockname())
        assert peers.account(*nobody) == REMOTE
        assert "no socket on this machine" in peers.stranger(*nobody)
        elsewhere = (("192.0.2.1", 40000), accepted.getsockname())  # (a remote client's)
        assert peers.stranger(*elsewhere) is None
        accepted.close()
    peers.close()
    assert not peers.available and peers.stranger(*ends) is None


@pytest.mark.parametrize("extra, says", [
    ("", "this account's programs only (other local accounts: 403)"),
    ('local_accounts = "any"\n', "any local account's programs (local_accounts)"),
    ('auth = { username = "me", password = "long enough" }\n',
     "those with the profile's credentials (auth)"),
])
def test_check_says_who_may_use_the_port(tmp_path, extra, says):
    profile = tmp_path / "p.toml"
    profile.write_text(f'{extra}default = "direct"\n[exits.direct]\n')
    out = _cli("check", str(profile))
    assert out.returncode == 0, out.stderr
    assert f"  clients  {says}" in out.stdout.splitlines()


def test_where_the_kernel_cannot_say_whose_a_client_is_serve_warns_and_serves(
        monkeypatch, start_proxy, origin):
    from anonproxy.inbound import peer_account

    monkeypatch.setattr(peer_account, "NETLINK_SOCK_DIAG", 255)  # (no such netlink family)
    proxy = start_proxy()
    assert "any local account can use the proxy port" in proxy.log()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
