"""The dashboard's API end to end: the real proxy with `admin` set, real traffic
through it (curl, a real microsocks exit), and the API read and driven with plain HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import ROOT
from helpers import curl
from upstreams import free_port, microsocks

from anonproxy.admin.control import runtime_dir

SECRET_PATH = "/echo?private-path=s3cret-query"


class Admin:
    """A client for one dashboard, as its owner: a requests session that never uses environment
    proxies and sends the per-run token `serve` left in the runtime directory (as the CLI
    does) on every request."""

    def __init__(self, port: int, token: bool = True) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["X-Anonproxy-Token"] = self.token

    @property
    def token(self) -> str:
        path = runtime_dir() / f"admin-127.0.0.1-{self.port}.token"
        return path.read_text().strip()

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.base + path, timeout=10, **kw)

    def json(self, path: str):
        response = self.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def send(self, method: str, path: str, body: dict | None = None, token: bool = True,
             **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if not token:
            headers["X-Anonproxy-Token"] = None  # requests drops a header set to None
        return self.session.request(method, self.base + path, json=body or {},
                                    headers=headers, timeout=30, **kw)


def _profile(admin_port: int, body: str, admin: str | None = None) -> str:
    admin = (admin or '"127.0.0.1:{port}"').replace("{port}", str(admin_port))
    return f'admin = {admin}\ndefault = "direct"\n[exits.direct]\n{body}'


@pytest.fixture
def dashboard(start_proxy, start_proxy_process, tmp_path, monkeypatch):
    """A proxy with a dashboard on a free loopback port, and its API client. `process=True`:
    `anonproxy serve` itself, for tests of the CLI against it (it leaves the pid and dashboard
    files the CLI finds it by)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))

    def start(body: str = "", admin: str | None = None, name: str = "test",
              process: bool = False):
        port = free_port("127.0.0.1")
        proxy = (start_proxy_process if process else start_proxy)(_profile(port, body, admin),
                                                                   name=name)
        return proxy, Admin(port)

    return start


def test_api_reports_exits_rules_traffic_and_recent_connections(dashboard, origin, tmp_path):
    exit_ = microsocks("127.0.0.2", tmp_path, user="alice", password="hunter2-secret")
    try:
        proxy, admin = dashboard(
            f'[exits.de]\nvia = ["socks5h://alice:hunter2-secret@127.0.0.2:{exit_.port}"]\n'
            'country = "DE"\n'
            '[[rules]]\ndomains = ["never.example"]\nexit = "de"\n'
            '[[rules]]\ncidrs = ["127.0.0.1/32"]\nexit = "de"\n')
        before = admin.json("/api/status")["connections_total"]
        for _ in range(3):
            out = curl("-x", proxy.url, "--data-binary", "hello",
                       f"http://127.0.0.1:{origin.port}{SECRET_PATH}")
            assert out.returncode == 0, out.stderr
        assert origin.last.peer[0] == "127.0.0.2"  # it really went out through the exit

        status = admin.json("/api/status")
        assert status["profile"] == "test" and status["listen"] == f"{proxy.host}:{proxy.port}"
        assert status["connections_total"] >= before + 3
        assert status["traffic"]["de"]["connections"] == 3
        assert status["traffic"]["de"]["up"] == 3 * len("hello")
        assert status["traffic"]["de"]["down"] > 0

        exits = {e["name"]: e for e in admin.json("/api/exits")}
        assert exits["de"]["kind"] == "chain" and exits["de"]["country"] == "DE"
        assert exits["de"]["hops"] == [f"socks5://***:***@127.0.0.2:{exit_.port}"]
        assert exits["direct"]["kind"] == "direct" and exits["direct"]["default"]

        rules = {r["number"]: r for r in admin.json("/api/rules")}
        assert rules[1]["hits"] == 0 and rules[2]["hits"] == 3 and rules[0]["exit"] == "direct"

        recent = admin.json("/api/connections")
        assert recent[0]["site"] == f"127.0.0.1:{origin.port}" and recent[0]["exit"] == "de"
        assert recent[0]["status"] == "200" and recent[0]["error"] is None

        everything = json.dumps(admin.json("/api/state"))
        for secret in ("private-path", "s3cret-query", "hunter2-secret"):
            assert secret not in everything  # no paths, queries or credentials, anywhere
        assert admin.json("/api/tor") == []
    finally:
        exit_.stop()


def test_recent_connections_can_be_cleared(dashboard, origin):
    proxy, admin = dashboard()
    assert curl("-x", proxy.url, f"http://127.0.0.1:{origin.port}/echo").returncode == 0
    assert len(admin.json("/api/connections")) == 1
    answer = admin.send("DELETE", "/api/connections")
    assert answer.status_code == 200 and answer.json()["ok"]
    assert admin.json("/api/connections") == []


@pytest.mark.parametrize("host", [
    "evil.example:{port}",  # a DNS-rebinding page: the browser sends the attacker's name
    "127.0.0.1.nip.io:{port}",
    "127.0.0.1:1",
    "",
])
def test_admin_refuses_requests_whose_host_is_not_its_address(dashboard, host):
    _, admin = dashboard()
    for path in ("/", "/api/status", "/api/state"):
        response = admin.get(path, headers={"Host": host.format(port=admin.port)})
        assert response.status_code == 421, (path, response.text)
        assert "only to its own address" in response.json()["error"]
    answer = admin.send("POST", "/api/reload", headers={"Host": host.format(port=admin.port)})
    assert answer.status_code == 421
    assert admin.get("/api/status", headers={"Host": f"localhost:{admin.port}"}).status_code == 200


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/reload"), ("POST", "/api/newnym"), ("POST", "/api/profile"),
    ("DELETE", "/api/connections"),
])
def test_state_changing_requests_need_the_token(dashboard, origin, method, path):
    proxy, admin = dashboard()
    curl("-x", proxy.url, f"http://127.0.0.1:{origin.port}/echo")
    before = admin.json("/api/status")
    missing = admin.send(method, path, token=False)
    wrong = admin.send(method, path, headers={"X-Anonproxy-Token": "guess"})
    foreign = admin.send(method, path, headers={"Origin": "http://evil.example"})
    for response in (missing, wrong):
        assert response.status_code == 401, response.text
        assert "needs a login" in response.json()["error"]
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]
    after = admin.json("/api/status")
    assert (after["reloads"], after["identities"]) == (before["reloads"], before["identities"])
    assert len(admin.json("/api/connections")) == 1  # not cleared


def test_a_password_guards_every_page_and_call(dashboard, tmp_path):
    proxy, admin = dashboard(admin='{ listen = "127.0.0.1:{port}", password = "correct horse" }',
                             process=True)
    for path in ("/", "/api/status", "/static/app.js"):
        response = admin.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert admin.get("/api/status", auth=("anyone", "wrong horse")).status_code == 401
    admin.session.auth = ("anyone", "correct horse")
    assert admin.get("/api/status").status_code == 200
    assert admin.send("POST", "/api/reload").status_code == 200
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    listen = f"{proxy.host}:{proxy.port}"
    assert _run_cli("status", "--listen", listen, env=env).returncode == 1
    status = _run_cli("status", "--listen", listen,
                      env={**env, "ANONPROXY_ADMIN_PASSWORD": "correct horse"})
    assert status.returncode == 0, status.stderr


def test_reload_through_the_api_applies_a_new_rule_and_refuses_a_broken_file(dashboard, tmp_path):
    proxy, admin = dashboard()
    path = tmp_path / "test.toml"
    path.write_text(path.read_text() + '[[rules]]\ndomains = ["added.example"]\nexit = "block"\n')
    answer = admin.send("POST", "/api/reload")
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    assert next(r["text"] for r in admin.json("/api/rules")).startswith('domains = ["added.example"]')
    out = curl("-x", proxy.url, "http://added.example/")
    assert b"blocked by rule 1" in out.stdout

    path.write_text(path.read_text() + "[[rules]]\nexit = 5\n")
    refused = admin.send("POST", "/api/reload")
    assert refused.status_code == 409
    assert str(path) in refused.json()["error"] and "rules[2].exit" in refused.json()["error"]
    status = admin.json("/api/status")
    assert status["reloads"] == 1 and str(path) in status["last_reload_error"]
    assert len(admin.json("/api/rules")) == 2  # the running profile is kept


def test_rule_hits_survive_a_reload_for_the_rules_it_left_unchanged(dashboard, tmp_path, origin):
    proxy, admin = dashboard('[[rules]]\ndomains = ["blocked.example"]\nexit = "block"\n'
                             '[[rules]]\ncidrs = ["127.0.0.1/32"]\nexit = "direct"\n')
    for url in ("http://blocked.example/", f"http://127.0.0.1:{origin.port}/echo",
                f"http://127.0.0.1:{origin.port}/echo", f"http://127.0.0.2:{origin.port}/"):
        curl("-x", proxy.url, url)
    hits = {r["text"]: r["hits"] for r in admin.json("/api/rules")}
    assert list(hits.values()) == [1, 2, 1], hits
    path = tmp_path / "test.toml"  # a new first rule, the cidr rule changed, the domain one kept
    path.write_text(path.read_text().replace('cidrs = ["127.0.0.1/32"]', 'cidrs = ["127.0.0.0/8"]')
                    .replace("[[rules]]", '[[rules]]\nports = [9]\nexit = "block"\n[[rules]]', 1))
    assert admin.send("POST", "/api/reload").status_code == 200
    rules = admin.json("/api/rules")
    assert [(r["text"].split(" ->")[0], r["hits"]) for r in rules] == [
        ("ports = [9]", 0), ('domains = ["blocked.example"]', 1), ('cidrs = ["127.0.0.0/8"]', 0),
        ("no rule matched", 1)], rules


def test_switching_the_active_profile_through_the_api(dashboard, tmp_path, origin):
    proxy, admin = dashboard()
    (tmp_path / "blocking.toml").write_text(
        'default = "block"\n[exits.direct]\n')
    assert "blocking" in admin.json("/api/status")["profiles"]
    unknown = admin.send("POST", "/api/profile", {"profile": "../../etc/passwd"})
    assert unknown.status_code == 400 and "one of" in unknown.json()["error"]
    answer = admin.send("POST", "/api/profile", {"profile": "blocking"})
    assert answer.status_code == 200, answer.text
    assert admin.json("/api/status")["profile"] == "blocking"
    out = curl("-x", proxy.url, f"http://127.0.0.1:{origin.port}/echo")
    assert b"blocked by the profile's default" in out.stdout
    assert origin.received == []


def test_concurrent_reloads_each_get_the_outcome_of_their_own_request(dashboard, tmp_path):
    _proxy, admin = dashboard()
    (tmp_path / "broken.toml").write_text('default = "nowhere"\n[exits.direct]\n')
    calls = [("/api/profile", {"profile": "broken"}), ("/api/reload", None)] * 4
    clients = [Admin(admin.port) for _ in calls]
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | None] = [None] * len(calls)

    def call(i: int) -> None:
        barrier.wait()
        answers[i] = clients[i].send("POST", *calls[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for (path, _), answer in zip(calls, answers, strict=True):
        assert answer is not None
        if path == "/api/profile":
            assert answer.status_code == 409 and "broken.toml" in answer.json()["error"], answer.text
        else:
            assert answer.status_code == 200 and answer.json()["ok"], answer.text
    status = admin.json("/api/status")
    assert status["profile"] == "test" and status["reloads"] == 4


def test_events_stream_ticks_with_a_rising_connection_count(dashboard, origin):
    proxy, admin = dashboard()
    seen = []
    with admin.session.get(admin.base + "/api/events", stream=True, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = response.iter_lines(decode_unicode=True)
        for line in lines:
            if line.startswith("data: "):
                status = json.loads(line[6:])["status"]
                assert "profiles" not in status  # ticks do not look at the profile folders
                seen.append(status["connections_total"])
                curl("-x", proxy.url, f"http://127.0.0.1:{origin.port}/echo")
            if len(seen) == 3:
                break
    assert seen[0] < seen[1] < seen[2]


def test_the_proxy_never_forwards_to_its_admin_address(dashboard):
    proxy, admin = dashboard()
    target = f"127.0.0.1:{admin.port}"
    plain = curl("-x", proxy.url, f"http://{target}/api/status")
    tunnel = curl("-p", "-x", proxy.url, f"http://{target}/api/status")
    socks = curl("-x", f"socks5h://{proxy.host}:{proxy.port}", f"http://{target}/api/status")
    assert b"proxy's own address" in plain.stdout
    assert tunnel.returncode != 0 and socks.returncode != 0
    assert admin.json("/api/status")["connections_total"] >= 3


def test_the_page_loads_nothing_from_outside_this_machine(dashboard):
    _, admin = dashboard()
    page = admin.get("/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and "Server" not in page.headers
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = admin.get(asset).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset
    assert admin.get("/static/../app.py").status_code == 404


def _run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)})


def test_cli_status_reload_and_newnym_use_the_api(dashboard, origin, tmp_path):
    proxy, admin = dashboard('[exits.s]\nvia = ["socks5://127.0.0.1:9"]\n', process=True)
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    curl("-x", proxy.url, f"http://127.0.0.1:{origin.port}/echo")
    listen = f"{proxy.host}:{proxy.port}"
    status = _run_cli("status", "--listen", listen, env=env)
    assert status.returncode == 0, status.stderr
    assert "profile      test" in status.stdout and f"127.0.0.1:{admin.port}" in status.stdout
    assert "exit direct" in status.stdout and "socks5://127.0.0.1:9" in status.stdout
    assert "1 conns" in status.stdout

    newnym = _run_cli("newnym", "--listen", listen, "--site", "www.example.com", env=env)
    # no Tor exit: nothing to renew, and it says so instead of claiming success
    assert newnym.returncode == 1 and "has no Tor exit" in newnym.stderr, newnym
    reload = _run_cli("reload", "--admin", f"127.0.0.1:{admin.port}", env=env)
    assert reload.returncode == 0 and "reloaded profile test" in reload.stdout
    state = admin.json("/api/status")
    assert state["identities"] == 0 and state["reloads"] == 1

    gone = _run_cli("status", "--admin", f"127.0.0.1:{free_port('127.0.0.1')}", env=env)
    assert gone.returncode == 1 and "no dashboard on" in gone.stderr
    proxy.stop()
    after = _run_cli("status", "--listen", listen, env=env)
    assert after.returncode == 1 and "no proxy of yours is running" in after.stderr


@pytest.mark.parametrize("admin, listen, says", [
    ("0.0.0.0:{a}", "127.0.0.1:{l}", "a dashboard beyond loopback can steer the proxy"),
    ("127.0.0.1:{l}", "127.0.0.1:{l}", "the same address as listen"),
])
def test_serve_admin_option_is_checked_as_the_profile_key_is(tmp_path, admin, listen, says):
    ports = {"a": free_port("127.0.0.1"), "l": free_port("127.0.0.1")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "anonproxy", "serve", "--profile", "direct",
         "--listen", listen.format(**ports), "--admin", admin.format(**ports)],
        capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert f"--admin {admin.format(**ports)}" in out.stderr and "Traceback" not in out.stderr


def test_a_taken_admin_address_stops_serve_with_a_clear_message(start_proxy_process, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"cannot start the dashboard on 127\.0\.0\.1:"):
            start_proxy_process(_profile(port, ""))


def test_exits_show_pool_members_health_with_probe_time_and_latency(dashboard, tmp_path):
    alive, dead = microsocks("127.0.0.2", tmp_path), microsocks("127.0.0.3", tmp_path)
    try:
        dead.kill()
        _, admin = dashboard(
            f'[exits.a]\nvia = ["socks5://127.0.0.2:{alive.port}"]\n'
            f'[exits.b]\nvia = ["socks5://127.0.0.3:{dead.port}"]\n'
            '[exits.p]\npool = ["a", "b"]\n[health]\ninterval = 1\nrise = 1\nfall = 1\n')
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            members = {m["name"]: m for m in
                       next(e for e in admin.json("/api/exits") if e["name"] == "p")["members"]}
            if members["a"]["last_probe"] and members["b"]["last_probe"] \
                    and not members["b"]["up"]:
                break
            time.sleep(0.2)
        assert members["a"]["up"] and members["a"]["latency_ms"] is not None
        assert abs(members["a"]["last_probe"] - time.time()) < 10
        assert not members["b"]["up"] and "refused" in members["b"]["last_error"]
    finally:
        alive.stop()
        dead.stop()


def test_a_killed_proxys_dashboard_file_does_not_mislead_the_next_one(start_proxy_process,
                                                                     tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    admin_port = free_port("127.0.0.1")
    first = start_proxy_process(_profile(admin_port, ""), name="first", listen=listen)
    first.process.kill()  # no clean-up: its pid and dashboard files stay behind
    first.process.wait()
    assert list(run.glob("anonproxy/*.admin"))
    start_proxy_process('default = "direct"\n[exits.direct]\n', name="second", listen=listen)
    env = {"XDG_RUNTIME_DIR": str(run)}
    # the second has no dashboard: its control socket answers, not the first's stale file
    reload = _run_cli("reload", "--listen", listen, env=env)
    assert reload.returncode == 0 and "reloaded profile second" in reload.stdout, reload.stderr
    status = _run_cli("status", "--listen", listen, env=env)
    assert status.returncode == 0 and "profile      second" in status.stdout, status.stderr
    assert "no dashboard" in status.stdout
    named = _run_cli("reload", "--admin", f"127.0.0.1:{admin_port}", env=env)
    assert named.returncode == 1 and "no dashboard on" in named.stderr  # named: no guessing


def test_traffic_through_a_pool_counts_for_the_pool_and_its_member(dashboard, origin, tmp_path):
    proxy, admin = dashboard('[exits.d2]\n[exits.p]\npool = ["d2"]\n'
                             '[[rules]]\ncidrs = ["127.0.0.1/32"]\nexit = "p"\n',
                             process=True)  # (status finds it by the files serve leaves)
    for _ in range(2):
        out = curl("-x", proxy.url, "--data-binary", "hello", origin.url("/echo"))
        assert out.returncode == 0, out.stderr
    traffic = admin.json("/api/status")["traffic"]
    for name in ("p", "d2"):
        assert traffic[name]["connections"] == 2 and traffic[name]["up"] == 2 * len("hello")
    assert "p>d2" not in traffic
    status = _run_cli("status", "--listen", f"{proxy.host}:{proxy.port}",
                      env={"XDG_RUNTIME_DIR": str(tmp_path / "run")})
    lines = {line.split()[1]: line for line in status.stdout.splitlines()
             if line.startswith("exit ")}
    assert "2 conns, 10 B up" in lines["p"] and "2 conns, 10 B up" in lines["d2"], status.stdout
