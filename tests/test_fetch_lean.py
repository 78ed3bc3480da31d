"""The lean `anonproxy fetch` (cli/fetch_lean.py, cli/announce.py): through a running `serve`
of the same profile file, and only then; byte for byte what the full fetch does — the request
the origin receives, the output, the sentence and the exit code — and the full fetch whenever
anything about that serve is in doubt. Real `serve` and `fetch` processes, a recording origin
(h11), a TLS origin with a throwaway certificate; each test has a runtime directory of its own.

Which path a fetch took is told by the serve's log: the lean fetch is a CONNECT through it
(one `connect` line), the full fetch never touches its listener.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import wait_until
from tlsorigin import tls_origin_in

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
default = "direct"
[exits.direct]
[[rules]]
domains = ["blocked.localhost"]
exit = "block"
[headers]
user_agent = { replace = "Mozilla/5.0 (lean test)" }
accept_language = { replace = "en-US,en;q=0.5" }
referer = "origin-only"
cookie = "strip"
client_hints = "strip-all"
"""


@dataclass
class Serve:
    process: subprocess.Popen
    port: int
    log_path: Path

    def connects(self) -> int:
        """The CONNECTs the serve logged so far (each is logged once its tunnel closed)."""
        return self.log_path.read_text().count(" connect ")

    def wait_connects(self, count: int, timeout: float = 5) -> int:
        wait_until(lambda: self.connects() >= count, timeout)
        return self.connects()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(15)
        self.process.stdout.close()
        return code


class Lean:
    """A runtime directory and a config folder of the test's own, serves started in them, and
    fetches run with them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env = {k: v for k, v in os.environ.items()
                    if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        self.env.update(PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path / "run"),
                        XDG_CONFIG_HOME=str(tmp_path / "config"))
        self.serves: list[Serve] = []

    @property
    def runtime(self) -> Path:
        return self.tmp / "run" / "anonproxy"

    def profile(self, text: str, name: str) -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(text)
        return path

    def serve(self, profile: Path, admin: str = "off") -> Serve:
        log_path = self.tmp / f"serve-{len(self.serves)}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
                 "--listen", "127.0.0.1:0", "--admin", admin],
                stdout=subprocess.PIPE, stderr=log, text=True, env=self.env, cwd=ROOT)
        line = process.stdout.readline()
        if not line.startswith("anonproxy listening on "):
            process.kill()
            raise RuntimeError(f"serve did not start: {log_path.read_text()}")
        started = Serve(process, int(line.rsplit(":", 1)[1]), log_path)
        self.serves.append(started)
        return started

    def fetch(self, *args: str, env: dict | None = None, cwd: Path | None = None):
        return subprocess.run([sys.executable, "-m", "anonproxy", "fetch", *args],
                              capture_output=True, timeout=60, env={**self.env, **(env or {})},
                              cwd=cwd or self.tmp)

    def announcement(self, serve: Serve) -> Path:
        return self.runtime / f"serve-127.0.0.1-{serve.port}.fetch"


@pytest.fixture
def lean(tmp_path):
    helper = Lean(tmp_path)
    yield helper
    for serve in helper.serves:
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait()
        if not serve.process.stdout.closed:
            serve.process.stdout.close()


@pytest.fixture
def served(lean):
    """A serve of the POLICY profile, its file, and a copy of it (the same text in another
    file: no serve announces it, so fetch runs it itself)."""
    profile = lean.profile(POLICY, "served")
    return lean.serve(profile), profile, lean.profile(POLICY, "copy")


@pytest.fixture
def tls_origin(tmp_path):
    """A recording origin behind TLS on 127.0.0.1 and the file to trust it by (SSL_CERT_FILE:
    both fetches verify with the default trust store)."""
    yield from tls_origin_in(tmp_path, "anonproxy lean test origin")


def _request(origin) -> tuple | None:
    last = origin.received[-1] if origin.received else None
    return None if last is None else (last.method, last.target, last.headers, last.body_sha256)


def both(lean: Lean, serve: Serve, profile: Path, copy: Path, origin, *args: str,
         env: dict | None = None, hops: int = 1):
    """Fetch with the served profile (lean: a CONNECT in the serve's log for each of its
    `hops`) and with its copy (full: none); assert that they did and said the same. Returns
    the lean run."""
    before = serve.connects()
    through = lean.fetch("--profile", str(profile), *args, env=env)
    received = _request(origin)
    assert serve.wait_connects(before + hops) == before + hops, (args, through.stderr)
    itself = lean.fetch("--profile", str(copy), *args, env=env)
    time.sleep(0.1)  # (a CONNECT the full fetch made by mistake would be logged by now)
    assert serve.connects() == before + hops, "the full fetch went through the serve"
    assert (through.returncode, through.stdout, through.stderr) == \
        (itself.returncode, itself.stdout, itself.stderr), args
    assert received == _request(origin), args  # the origin got the same request twice
    assert b"Traceback" not in through.stderr
    return through


# --- taken when a serve runs the same profile, and then the same as the full fetch ------------

@pytest.mark.parametrize("args", [
    ["/echo"],
    ["/echo", "-H", "X-Forwarded-For: 1.2.3.4", "-H", "X-Mine: kept", "-H", "Cookie: a=b",
     "-H", "Referer: http://elsewhere.example/a/path?q=1", "-H", "User-Agent: my own",
     "-H", "Accept-Language: de", "-H", "Sec-CH-UA-Platform: Linux", "-H", "Host: other",
     "-H", "Connection: X-Listed", "-H", "X-Listed: dropped", "-H", "Proxy-Authorization: x"],
    ["-i", "/bytes/150000?chunked=1"],
    ["-i", "/bytes/150000?close=1"],
    ["-i", "/bytes/70000"],
    ["-X", "HEAD", "-i", "/bytes/1000"],
    ["-i", "/status/204"],
    ["-d", "hello lean", "/echo"],
    ["--data-binary=x=1&y=2", "-Xput", "/echo"],
    ["-i", "/status/404"],
    ["-f", "/status/404"],
    ["--fail", "-i", "/status/500"],
    ["-L", "-i", "/redirect?to=/echo"],
    ["--max-time", "20", "-H", "Authorization: Bearer t", "/echo"],
], ids=lambda a: " ".join(a)[:40])
def test_lean_fetch_is_byte_for_byte_the_full_fetch(lean, served, origin, args):
    serve, profile, copy = served
    path = next(a for a in args if a.startswith("/"))
    args = [origin.url(a) if a == path else a for a in args]
    both(lean, serve, profile, copy, origin, *args, hops=2 if "-L" in args else 1)


def test_lean_fetch_sends_only_what_the_full_fetch_sends(lean, served, origin):
    """The policy applied by the client, as the full fetch applies it (for https it could not
    be otherwise): identifying and hop-by-hop headers gone, the profile's User-Agent."""
    serve, profile, copy = served
    both(lean, serve, profile, copy, origin, origin.url("/echo"),
         "-H", "X-Forwarded-For: 1.2.3.4", "-H", "Cookie: a=b", "-H", "X-Mine: kept")
    assert origin.last.headers == [("Host", f"127.0.0.1:{origin.port}"), ("X-Mine", "kept"),
                                   ("User-Agent", "Mozilla/5.0 (lean test)")]


def test_lean_fetch_of_a_body_from_a_file_and_into_a_file(lean, served, origin, tmp_path):
    serve, profile, copy = served
    data = tmp_path / "upload.bin"
    data.write_bytes(os.urandom(300_000))
    outs = []
    for which in (profile, copy):
        out = tmp_path / f"out-{which.stem}"
        done = lean.fetch("--profile", str(which), "-d", f"@{data}", "-o", str(out),
                          origin.url("/echo"))
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done.stderr
        outs.append(out.read_bytes())
    assert serve.wait_connects(1) == 1
    assert outs[0] == outs[1] and b'"length": 300000' in outs[0]
    assert origin.received[-1].body_sha256 == origin.received[-2].body_sha256


def test_lean_fetch_follows_redirects_as_the_full_fetch(lean, served, origin, second_origin):
    """-L through the proxy: each redirect a CONNECT of its own (routed again), credentials
    kept to their origin."""
    serve, profile, copy = served
    elsewhere = second_origin.url("/echo")
    for follow in ("-L", "--location-trusted"):
        for which in (profile, copy):
            done = lean.fetch("--profile", str(which), follow, "-H", "Authorization: Bearer s",
                              origin.url(f"/redirect?to={elsewhere}"))
            assert done.returncode == 0, done.stderr
            sent = second_origin.last.header("authorization")
            assert sent == ("Bearer s" if follow == "--location-trusted" else None), follow
    assert serve.wait_connects(4) == 4  # two lean fetches, two hops each


def test_lean_fetch_over_https_is_the_full_fetch(lean, served, tls_origin):
    """CONNECT, then TLS verified against the default trust store, and the header policy
    applied inside it (the profile's User-Agent, the cookie stripped)."""
    serve, profile, copy = served
    secure, cert_file = tls_origin
    trust = {"SSL_CERT_FILE": str(cert_file)}
    url = f"https://127.0.0.1:{secure.port}"
    for args in (["-i", "-H", "Cookie: a=b", "-H", "X-Mine: kept", f"{url}/echo"],
                 [f"{url}/bytes/150000?chunked=1"], ["-d", "posted", f"{url}/echo"]):
        both(lean, serve, profile, copy, secure, *args, env=trust)
    assert secure.received[0].headers == [
        ("Host", f"127.0.0.1:{secure.port}"), ("X-Mine", "kept"),
        ("User-Agent", "Mozilla/5.0 (lean test)")]


def test_lean_fetch_verifies_the_certificate(lean, served, tls_origin, tmp_path):
    """An origin the trust store does not vouch for: the same refusal, exit code 5."""
    serve, profile, copy = served
    secure, _ = tls_origin
    done = both(lean, serve, profile, copy, secure, f"https://127.0.0.1:{secure.port}/echo",
                env={"SSL_CERT_FILE": str(tmp_path / "none.pem")})
    assert done.returncode == 5 and b"TLS with 127.0.0.1 failed" in done.stderr, done.stderr
    assert not secure.received


class Silent:
    """A server that takes connections and requests and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                return

    def hang_up(self) -> None:
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.server.close()
    server.hang_up()


def test_the_limits_and_max_time_are_the_full_fetchs(lean, silent):
    """A silent origin: the profile's response_timeout, or --max-time first, in the same words
    and exit code (5) as the full fetch."""
    text = POLICY + "[limits]\nresponse_timeout = 2\n"
    profile, copy = lean.profile(text, "slow"), lean.profile(text, "slow-copy")
    serve = lean.serve(profile)
    url = f"http://127.0.0.1:{silent.port}/"
    for extra, said in (([], b"never answered within 2 s (limits.response_timeout)"),
                        (["--max-time", "1"], b"--max-time 1 s reached")):
        through = lean.fetch("--profile", str(profile), *extra, url)
        itself = lean.fetch("--profile", str(copy), *extra, url)
        assert through.returncode == itself.returncode == 5, through.stderr
        assert through.stderr == itself.stderr and said in through.stderr, through.stderr
    silent.hang_up()  # (a tunnel is logged once it closed)
    assert serve.wait_connects(2) == 2


# --- exit codes -------------------------------------------------------------------------------

def test_a_refusal_by_the_proxy_is_exit_code_3_with_the_same_sentence(lean, served):
    """The proxy's 403 (a rule's block here) is the full fetch's refusal."""
    serve, profile, copy = served
    port = _free_port()
    through = lean.fetch("--profile", str(profile), f"http://blocked.localhost:{port}/")
    itself = lean.fetch("--profile", str(copy), f"http://blocked.localhost:{port}/")
    assert through.returncode == itself.returncode == 3, through.stderr
    assert through.stderr == itself.stderr and through.stdout == b""
    assert " status=403 " in serve.log_path.read_text()


def test_an_exit_failure_hands_over_to_the_full_fetch(lean, served):
    """The proxy's 502 (nothing listens at the destination): nothing was sent yet, so the full
    fetch takes the command and says what it says (exit code 5, its own sentence)."""
    serve, profile, copy = served
    url = f"http://127.0.0.1:{_free_port()}/"
    through = lean.fetch("--profile", str(profile), url)
    itself = lean.fetch("--profile", str(copy), url)
    assert (through.returncode, through.stderr) == (itself.returncode, itself.stderr)
    assert through.returncode == 5, through.stderr
    assert " status=502 " in serve.log_path.read_text()  # the lean attempt, refused


# --- not taken --------------------------------------------------------------------------------

def _full(lean: Lean, serve: Serve, *args: str, env: dict | None = None):
    """A fetch that must not go through `serve` (and succeeds the full way)."""
    before = serve.connects()
    done = lean.fetch(*args, env=env)
    assert done.returncode == 0, done.stderr
    time.sleep(0.1)  # (a CONNECT the lean fetch made by mistake would be logged by now)
    assert serve.connects() == before, "the lean fetch was taken"
    return done


def test_not_taken_for_options_only_the_full_fetch_has(lean, served, origin):
    serve, profile, _ = served
    for extra in (["-v"], ["--exit", "direct"], ["--incl"], ["-if"]):
        _full(lean, serve, "--profile", str(profile), *extra, origin.url("/echo"))


def test_not_taken_once_the_profile_changed(lean, served, origin):
    """An edit the running serve has not read (the same text, even): fetch runs the file."""
    serve, profile, _ = served
    profile.write_text(POLICY)
    _full(lean, serve, "--profile", str(profile), origin.url("/echo"))


def test_not_taken_when_the_proxy_demands_credentials(lean, origin):
    """Fetch would have to send them, and never writes or reads them anywhere new."""
    profile = lean.profile('auth = { username = "lean", password = "s3cret-pass" }\n' + POLICY,
                           "auth")
    serve = lean.serve(profile)
    announced = lean.announcement(serve).read_text()
    assert "auth=yes" in announced and "s3cret" not in announced and "lean" not in announced
    _full(lean, serve, "--profile", str(profile), origin.url("/echo"))


def test_not_taken_from_a_dead_serve(lean, served, origin):
    """A serve killed without cleaning up leaves its announcement: not believed."""
    serve, profile, _ = served
    announced = lean.announcement(serve)
    serve.stop(signal.SIGKILL)
    assert announced.exists()
    done = lean.fetch("--profile", str(profile), origin.url("/echo"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("spoil", ["file mode", "directory mode", "another pid", "format"])
def test_not_taken_from_an_announcement_in_doubt(lean, served, origin, spoil):
    serve, profile, _ = served
    announced = lean.announcement(serve)
    if spoil == "file mode":
        announced.chmod(0o640)
    elif spoil == "directory mode":
        lean.runtime.chmod(0o750)
    elif spoil == "another pid":
        text = announced.read_text().replace(f"pid={serve.process.pid}", f"pid={os.getpid()}")
        announced.write_text(text)
    else:
        announced.write_text(announced.read_text().replace("anonproxy-fetch 1", "anonproxy-fetch 2"))
    _full(lean, serve, "--profile", str(profile), origin.url("/echo"))


def test_a_profile_named_in_the_users_folder_is_matched_by_name(lean, origin):
    """`--profile NAME` resolves as load_profile does (the user's folder first): the serve and
    the fetch name it differently and still meet; the shipped profile of the same name does not."""
    folder = lean.tmp / "config" / "anonproxy"
    folder.mkdir(parents=True)
    (folder / "direct.toml").write_text(POLICY)
    serve = lean.serve(folder / "direct.toml")
    before = serve.connects()
    done = lean.fetch("--profile", "direct", origin.url("/echo"))
    assert done.returncode == 0, done.stderr
    assert serve.wait_connects(before + 1) == before + 1
    relative = lean.fetch("--profile", "config/anonproxy/direct.toml", origin.url("/echo"))
    assert relative.returncode == 0 and serve.wait_connects(before + 2) == before + 2
    (folder / "direct.toml").unlink()  # now `direct` is the shipped one: not this serve's
    _full(lean, serve, "--profile", "direct", origin.url("/echo"))


# --- the announcement -------------------------------------------------------------------------

def test_the_announcement_is_private_and_gone_when_serve_stops(lean, served):
    serve, _, _ = served
    announced = lean.announcement(serve)
    info = announced.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(lean.runtime.stat().st_mode) == 0o700
    text = announced.read_text()
    assert text.startswith("anonproxy-fetch 1\n") and f"connect=127.0.0.1:{serve.port}\n" in text
    assert serve.stop() == 0
    assert not announced.exists()
    assert not list(lean.runtime.glob("serve-*"))


def test_the_announcement_carries_the_policy_and_limits_as_loaded(tmp_path):
    """Every field of the header policy, by name (a field this version does not write would
    make the lean fetch hand over), the limits fetch keeps, where to connect (a wildcard
    listener on loopback) and the profile's own listen address."""
    from anonproxy.cli import announce
    from anonproxy.config.profiles import load_profile
    from anonproxy.wire.address import Address
    from anonproxy.wire.headers import HeaderPolicy

    path = tmp_path / "p.toml"
    path.write_text(POLICY + "[limits]\nconnect_timeout = 3.5\n")
    stamped = announce.stamp_of(str(path))
    loaded = load_profile(str(path))
    text = announce.announcement(loaded, Address("0.0.0.0", 8000), stamped)
    assert text is not None
    found = announce._announced(dict(line.partition("=")[::2] for line in text.splitlines()))
    assert found is not None
    assert HeaderPolicy(**found.policy) == loaded.profile.headers.policy()
    assert set(found.policy) == set(HeaderPolicy.__dataclass_fields__)
    assert found.limits == {"connect_timeout": 3.5, "response_timeout": 60.0,
                            "idle_timeout": 300.0}
    assert (found.host, found.port, found.listen) == ("127.0.0.1", 8000, ("127.0.0.1", 8118))
    # not the file the profile came from: nothing is announced
    assert announce.announcement(loaded, Address("127.0.0.1", 8000),
                                 (str(tmp_path / "other.toml"), stamped[1])) is None


def test_the_services_it_sees_are_those_the_full_fetch_refuses(lean, served, monkeypatch):
    from anonproxy.cli import announce
    from anonproxy.cli.remote import announced_services

    monkeypatch.setenv("XDG_RUNTIME_DIR", lean.env["XDG_RUNTIME_DIR"])
    lean.serve(lean.profile(POLICY, "with-admin"), admin="127.0.0.1:0")
    seen = {(h, p) for h, p in announce.services()}
    assert seen == {(a.host, a.port) for a in announced_services()} and len(seen) == 3


def test_a_redirect_to_another_serves_port_is_refused(lean, served, origin):
    """Mid-chain the lean fetch cannot hand over: a redirect to what another serve announced
    is refused as the full fetch refuses it (a name on such a port too: it would have to be
    resolved to know)."""
    serve, profile, _ = served
    other = lean.serve(lean.profile(POLICY.replace("lean test", "other"), "other"))
    for host in ("127.0.0.1", "localhost", "some.name.example"):
        done = lean.fetch("--profile", str(profile), "-L",
                          origin.url(f"/redirect?to=http://{host}:{other.port}/"))
        assert done.returncode == 3, done.stderr
        assert done.stderr == (f"anonproxy: fetch: refusing to forward to another running "
                               f"anonproxy {host}:{other.port}\n").encode()
    assert serve.wait_connects(3) == 3 and other.connects() == 0
    # the profile's own listen address, which no serve uses here: refused as the full fetch
    # refuses it
    done = lean.fetch("--profile", str(profile), "-L",
                      origin.url("/redirect?to=http://127.0.0.1:8118/"))
    said = b"anonproxy: fetch: refusing to forward to the proxy's own address 127.0.0.1:8118\n"
    assert (done.returncode, done.stderr) == (3, said)


# --- the command line and the files it resolves, as the full fetch resolves them -------------

@pytest.mark.parametrize("args, taken", [
    (["http://x/"], True),
    (["--profile", "p", "-i", "-f", "-L", "http://x/"], True),
    (["--profile=p", "--max-time=3", "--header=A: b", "http://x/", "-HC: d"], True),
    (["-X", "POST", "--request", "PUT", "-d", "a", "--data", "b", "--data-binary", "c",
      "-o", "f", "--output", "g", "--location-trusted", "http://x/"], True),
    ([], False),
    (["http://x/", "http://y/"], False),
    (["-v", "http://x/"], False),
    (["--exit", "e", "http://x/"], False),
    (["--prof", "p", "http://x/"], False),  # an abbreviation: argparse's to read
    (["-if", "http://x/"], False),
    (["-H", "-x", "http://x/"], False),
    (["-o=f", "http://x/"], False),
    (["--max-time", "0", "http://x/"], False),
    (["--max-time", "inf", "http://x/"], False),
    (["--max-time", "nan", "http://x/"], False),
    (["--", "http://x/"], False),
    (["-H"], False),
])
def test_the_options_the_lean_fetch_takes(args, taken):
    from anonproxy.cli.fetch_lean import options

    assert (options(args) is not None) is taken


def test_the_lean_fetch_reads_options_as_argparse_does():
    from anonproxy.cli.fetch_lean import options

    got = options(["--profile=p", "-HA: b", "--header", "C: d", "-XPUT", "--max-time", "2.5",
                   "-d", "x", "--data", "y", "-o", "out", "--location-trusted", "http://x/"])
    assert got is not None
    assert (got.url, got.profile, got.header, got.method, got.max_time, got.data, got.output) \
        == ("http://x/", "p", ["A: b", "C: d"], "PUT", 2.5, "y", "out")
    assert got.trusted and not got.follow and not got.include and not got.fail


def test_paths_are_resolved_as_the_full_fetch_resolves_them(tmp_path, monkeypatch):
    from anonproxy.admin.control import runtime_dir
    from anonproxy.cli import announce
    from anonproxy.config import profiles

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    assert announce.runtime_directory() == str(runtime_dir())
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert announce.runtime_directory() == str(runtime_dir())
    (tmp_path / "config" / "anonproxy").mkdir(parents=True)
    (tmp_path / "config" / "anonproxy" / "direct.toml").write_text("")
    (tmp_path / "mine.toml").write_text("")
    for ref in ("default", "direct", "mine.toml", "./mine.toml", str(tmp_path / "mine.toml")):
        assert announce.profile_file(ref) == os.path.realpath(profiles.resolve_ref(ref)), ref
    assert announce.profile_file("no-such-profile") is None
    assert Path(announce.profile_file("default")).parent == profiles.SHIPPED_DIR.resolve()


def test_commands_other_than_fetch_import_nothing_heavy():
    """main() asks the lean fetch first, for every command: that must cost nothing."""
    code = ("import sys; import anonproxy.cli.main as m; from anonproxy.cli import fetch_lean; "
            "assert fetch_lean.run(['check', 'x']) is None; "
            "heavy = {'asyncio', 'argparse', 'pydantic', 'anonproxy.config.models', 'ssl', "
            "'anonproxy.wire.http1'} & set(sys.modules); assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
