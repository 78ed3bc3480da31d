"""A private Tor network on loopback, for end-to-end tests of the tor exits.

It builds 1 directory authority (127.0.0.20), 1 middle relay (127.0.0.21) and one exit relay per
country (127.0.0.22, .23, ...): real `tor` processes, each on its own loopback address with free
ports; a GeoIP file mapping each exit's address to its country (for `ExitNodes {de}`); and a DNS
stub (dnslib, UDP+TCP on 127.0.0.1) through which the exits resolve `dns_names`. `client_torrc`
is the fragment a client tor adds to join. `python3 tests/tornet.py` runs a self-test (curl via
a client tor through the `de` then the `us` exit). Background: shared/TOR-TESTNET.md.

Why the unusual options:
- `TestingTorNetwork 1`, `DirAuthority`, `UseDefaultFallbackDirs 0`: a network of our own.
- Votes every 10 s (2 s delays; 5 s is rejected); `TestingV3AuthVotingStartOffset` puts the first
  vote ~4 s after launch, so the first consensus comes at ~8 s (an earlier vote sometimes misses
  relays' descriptors and costs a whole extra interval).
- `TestingDirAuthVoteExit/Guard` (+ `IsStrict`), `TestingMinExitFlagThreshold 0`: exits get the
  Exit flag although their policy lacks ports 80/443, and are never guards.
- The exit policy accepts 127.0.0.0/8 *and* `*:1024-65535`: clients judge exits by a per-port
  summary that ignores private ranges (127/8 alone leaves no usable exit), so a test's origin
  must listen on a port >= 1024. Safety net for that wide policy: `OutboundBindAddress(Exit)` on
  the relay's own 127.0.0.X; Linux refuses (EINVAL) to route a loopback source elsewhere, so a
  stream to a non-loopback address fails at once instead of leaving the machine.
- tor does not bind exit connections to 127/8 destinations: every exit reaches the origin from
  127.0.0.1, so `exit_country_of_peer` asks /proc which exit process owns the socket.
- `RefuseUnknownExits 0`: an exit that got the consensus late would refuse "unknown" relays.
- `ServerDNSResolvConfFile` -> the stub (exits ignore /etc/hosts; the host's resolver is not on
  loopback); `ServerDNSDetectHijacking 0`, `ServerDNSTestAddresses 127.0.0.1`: no probes out.
- `DirCache 0` on middle and exits (~13 MiB each instead of ~75). Client fragment: `ConfluxEnabled
  0` (one stream = one circuit = one exit); `LearnCircuitBuildTimeout 0` (a timeout learned from
  millisecond loopback circuits would drop circuits on a busy CI machine); an empty GeoIPv6File.
- Tor processes get PR_SET_PDEATHSIG (SIGTERM when the *thread* that started them ends: start the
  network from the main thread) and `stop()` ends them. Never `__OwningControllerProcess` with
  stem: tor would exit when that controller closes.
"""

from __future__ import annotations

import ctypes
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TOR = "/usr/sbin/tor"
TOR_GENCERT = shutil.which("tor-gencert") or "/usr/sbin/tor-gencert"  # Debian: /usr/bin
VOTING = 10  # seconds between consensuses
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class Relay:
    nickname: str
    address: str
    or_port: int
    datadir: Path  # holds its torrc, notice.log and stdout.log
    country: str | None = None  # exits only
    dir_port: int | None = None  # authority only
    fingerprint: str = ""
    process: subprocess.Popen | None = None


@dataclass
class TorNet:
    workdir: Path
    client_torrc: Path
    exits: dict[str, Relay]
    relays: list[Relay]  # [authority, middle, *exits]
    dns_names: dict[str, str]
    dns_port: int = 0
    startup_seconds: float = 0.0
    _dns_servers: list = field(default_factory=list, repr=False)

    def exit_country_of_peer(self, peer: tuple) -> str | None:
        """The country of the exit whose tor owns the TCP socket whose local address is `peer`
        (the origin's peer). Ask while that connection is open: a closed socket has no owner."""
        want = (_normal_ip(peer[0]), int(peer[1]))
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] != "0" and _proc_address(fields[1]) == want:
                    inodes.add(f"socket:[{fields[9]}]")
        for country, relay in self.exits.items():
            try:
                with os.scandir(f"/proc/{relay.process.pid}/fd") as fds:
                    if any(_readlink(fd.path) in inodes for fd in fds):
                        return country
            except OSError:  # that exit has died
                continue
        return None

    def memory_mib(self) -> float:
        """Resident memory of the network's tor processes."""
        return sum(_rss_mib(r.process.pid) for r in self.relays if r.process)

    def stop(self) -> None:
        procs = [r.process for r in self.relays if r.process and r.process.poll() is None]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for server in self._dns_servers:
            server.server.shutdown()
            server.server.server_close()
        self._dns_servers.clear()


def start_tor_network(workdir: Path, countries=("de", "us", "jp"),
                      dns_names: dict[str, str] | None = None, timeout: float = 60) -> TorNet:
    """Start the network; return once the authority's consensus lists every relay Running and each
    exit with the Exit flag and a microdescriptor whose policy accepts ports (a client started
    then bootstraps in ~2 s and can build circuits through every exit)."""
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dns_names = {"origin.tor.test": "127.0.0.1"} if dns_names is None else dict(dns_names)
    relays = [Relay("auth", "127.0.0.20", 0, workdir / "auth"),
              Relay("middle", "127.0.0.21", 0, workdir / "middle")]
    relays += [Relay(f"exit{cc}", f"127.0.0.{22 + i}", 0, workdir / f"exit{cc}", country=cc)
               for i, cc in enumerate(c.lower() for c in countries)]
    net = TorNet(workdir, workdir / "client.torrc", {r.country: r for r in relays[2:]}, relays, dns_names)
    try:
        net._dns_servers, net.dns_port = _start_dns_stub(dns_names)
        (workdir / "resolv.conf").write_text(f"nameserver 127.0.0.1:{net.dns_port}\n")
        geoip = workdir / "geoip"  # lines INTIPLOW,INTIPHIGH,CC
        ints = {r.country: int(ipaddress.ip_address(r.address)) for r in net.exits.values()}
        geoip.write_text("".join(f"{n},{n},{cc.upper()}\n" for cc, n in ints.items()))
        (workdir / "geoip6").write_text("")
        auth = relays[0]
        auth.dir_port = _free_port(auth.address)
        for r in relays:
            r.or_port = _free_port(r.address)
            r.datadir.mkdir(mode=0o700, exist_ok=True)
        v3ident = _generate_keys(relays, auth)
        common = ["TestingTorNetwork 1", (f"DirAuthority {auth.nickname} orport={auth.or_port} no-v2 "
                  f"v3ident={v3ident} {auth.address}:{auth.dir_port} {auth.fingerprint}"),
                  "UseDefaultFallbackDirs 0", f"GeoIPFile {geoip}", f"GeoIPv6File {workdir / 'geoip6'}"]
        client = common + ["ConfluxEnabled 0", "LearnCircuitBuildTimeout 0"]
        net.client_torrc.write_text("\n".join(client) + "\n")
        for r in relays:
            (r.datadir / "torrc").write_text("\n".join(common + _relay_options(r, net)) + "\n")
            r.process = _spawn_tor(r.datadir / "torrc", r.datadir / "stdout.log")
        _wait_for_consensus(net, started + timeout)
        net.startup_seconds = time.monotonic() - started
        return net
    except BaseException:
        net.stop()
        raise


def _relay_options(r: Relay, net: TorNet) -> list[str]:
    auth, middle = net.relays[:2]
    lines = [f"DataDirectory {r.datadir}", f"Nickname {r.nickname}", "RunAsDaemon 0", "SocksPort 0",
             f"Log notice file {r.datadir / 'notice.log'}", f"Address {r.address}",
             f"ORPort {r.address}:{r.or_port}", f"OutboundBindAddress {r.address}", "AssumeReachable 1",
             "ShutdownWaitLength 0", "ContactInfo tornet@tor.test"]
    if r is auth:
        offset = int(time.time() + 8) % VOTING  # consensus at launch + 7..8 s: votes at + 3..4 s
        exits = ",".join("$" + e.fingerprint for e in net.exits.values())
        return lines + [
            "AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1", f"DirPort {r.address}:{r.dir_port}",
            "ExitRelay 0", "ExitPolicy reject *:*", f"V3AuthVotingInterval {VOTING}", "V3AuthVoteDelay 2",
            "V3AuthDistDelay 2", f"TestingV3AuthInitialVotingInterval {VOTING}",
            "TestingV3AuthInitialVoteDelay 2", "TestingV3AuthInitialDistDelay 2",
            f"TestingV3AuthVotingStartOffset {offset}", "TestingMinExitFlagThreshold 0",
            f"TestingDirAuthVoteExit {exits}", "TestingDirAuthVoteExitIsStrict 1",
            f"TestingDirAuthVoteGuard ${auth.fingerprint},${middle.fingerprint}",
            "TestingDirAuthVoteGuardIsStrict 1"]
    lines.append("DirCache 0")
    if r.country is None:
        return lines + ["ExitRelay 0", "ExitPolicy reject *:*"]
    return lines + [
        "ExitRelay 1", "ExitPolicyRejectPrivate 0", "IPv6Exit 0", f"OutboundBindAddressExit {r.address}",
        "ExitPolicy accept 127.0.0.0/8:*,accept *:1024-65535,reject *:*", "RefuseUnknownExits 0",
        f"ServerDNSResolvConfFile {net.workdir / 'resolv.conf'}", "ServerDNSDetectHijacking 0",
        "ServerDNSTestAddresses 127.0.0.1"]


def _generate_keys(relays: list[Relay], auth: Relay) -> str:
    """The authority's v3 keys (tor-gencert) and every relay's identity (tor --list-fingerprint),
    in parallel: RSA key generation is the slow part (2-3 s). Returns the v3 identity."""
    keys = auth.datadir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    gencert = [TOR_GENCERT, "--create-identity-key", "-m", "12", "--passphrase-fd", "0",
               "-a", f"{auth.address}:{auth.dir_port}", "-i", str(keys / "authority_identity_key"),
               "-s", str(keys / "authority_signing_key"), "-c", str(keys / "authority_certificate")]
    jobs = [subprocess.Popen(gencert, stdin=subprocess.PIPE, **quiet)]
    jobs[0].stdin.write(b"\n")  # an empty passphrase
    jobs[0].stdin.close()
    jobs += [subprocess.Popen([TOR, "--list-fingerprint", "--defaults-torrc", os.devnull, "--hush",
                               "--DataDirectory", str(r.datadir), "--ORPort", f"{r.address}:{r.or_port}",
                               "--Nickname", r.nickname], **quiet) for r in relays]
    for job in jobs:
        if job.wait(60) != 0:
            raise RuntimeError(f"key generation failed: {job.args}")
    for r in relays:
        r.fingerprint = (r.datadir / "fingerprint").read_text().split()[1]
    certificate = (keys / "authority_certificate").read_text().splitlines()
    return next(line.split()[1] for line in certificate if line.startswith("fingerprint "))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn_tor(torrc: Path, stdout: Path) -> subprocess.Popen:
    """tor with this torrc only; its stdout (errors before the log file opens) to a file."""
    with open(stdout, "wb") as out:
        return subprocess.Popen([TOR, "--defaults-torrc", os.devnull, "-f", str(torrc)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509 (a prctl call only)


def _wait_for_consensus(net: TorNet, deadline: float) -> None:
    auth = net.relays[0]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy variables

    def fetch(path: str) -> str:
        with opener.open(f"http://{auth.address}:{auth.dir_port}/tor/{path}", timeout=5) as response:
            return response.read().decode()

    problem = "no consensus yet"
    while time.monotonic() < deadline:
        for r in net.relays:
            if r.process.poll() is not None:
                raise RuntimeError(f"tor {r.nickname} exited: see {r.datadir}/notice.log and stdout.log")
        try:
            flags, digests, nick = {}, {}, None  # by nickname: flags, microdescriptor digest
            for line in fetch("status-vote/current/consensus-microdesc").splitlines():
                word, _, rest = line.partition(" ")
                if word == "r":
                    nick = rest.split()[0]
                elif word == "s":
                    flags[nick] = set(rest.split())
                elif word == "m":
                    digests[nick] = rest.split()[0]
            missing = [r.nickname for r in net.relays if "Running" not in flags.get(r.nickname, ())]
            missing += [f"{e.nickname} Exit flag" for e in net.exits.values()
                        if "Exit" not in flags.get(e.nickname, ())]
            problem = f"consensus lacks {missing}"
            if not missing:
                mds = fetch("micro/d/" + "-".join(digests[e.nickname] for e in net.exits.values()))
                policies = [line for line in mds.splitlines() if line.startswith("p ")]
                if len(policies) == len(net.exits) and "p reject 1-65535" not in policies:
                    return  # tor writes accept 1024-65535 as its shorter form, "p reject 1-1023"
                problem = "exit microdescriptors lack an accepting policy"
        except (OSError, http.client.HTTPException) as error:  # 404 before the first consensus
            problem = f"authority: {error!r}"
        time.sleep(0.25)
    raise TimeoutError(f"tor network not ready: {problem}; logs in {net.workdir}")


def _start_dns_stub(names: dict[str, str]) -> tuple[list, int]:
    from dnslib import QTYPE, RCODE, RR, A
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    table = {k.lower().rstrip("."): v for k, v in names.items()}

    class Resolver(BaseResolver):
        def resolve(self, request, handler):
            reply, q = request.reply(), request.q
            name = str(q.qname).rstrip(".").lower()  # tor randomizes the case (0x20); echo it back
            if name not in table:
                reply.header.rcode = RCODE.NXDOMAIN
            elif q.qtype == QTYPE.A:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(table[name]), ttl=60))
            return reply  # a known name, another type: NOERROR without answers

    quiet = DNSLogger(logf=lambda message: None)
    for _ in range(20):  # a port free for both UDP and TCP
        port = _free_port("127.0.0.1", socket.SOCK_DGRAM)
        try:
            udp = DNSServer(Resolver(), "127.0.0.1", port, tcp=False, logger=quiet)
        except OSError:
            continue
        try:
            servers = [udp, DNSServer(Resolver(), "127.0.0.1", port, tcp=True, logger=quiet)]
        except OSError:  # that port is taken for TCP: the UDP server made for it is closed
            udp.server.server_close()
            continue
        for server in servers:
            server.start_thread()
        return servers, port
    raise RuntimeError("no free port for the DNS stub")


def _free_port(address: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _normal_ip(text: str) -> str:
    ip = ipaddress.ip_address(text.split("%")[0])
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def _proc_address(text: str) -> tuple[str, int]:
    """/proc/net/tcp's '0100007F:1F90' (native-endian 32-bit words) -> ('127.0.0.1', 8080)."""
    hexip, hexport = text.split(":")
    raw = b"".join(struct.pack("=I", int(hexip[i:i + 8], 16)) for i in range(0, len(hexip), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return _normal_ip(socket.inet_ntop(family, raw)), int(hexport, 16)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)


@pytest.fixture(scope="session")
def tornet(tmp_path_factory) -> TorNet:
    if not (os.access(TOR, os.X_OK) and os.access(TOR_GENCERT, os.X_OK)):
        pytest.skip(f"{TOR} or tor-gencert is missing (apt-get install tor)")
    pytest.importorskip("dnslib", reason="the tor network's DNS stub needs dnslib")
    # A busy machine can make the first consensus miss a relay; one more try costs ~10 s.
    for attempt in (1, 2):
        try:
            net = start_tor_network(tmp_path_factory.mktemp("tornet"))
            break
        except Exception as error:
            print(f"private tor network, attempt {attempt} failed: {error}", file=sys.stderr)
            if attempt == 2:
                raise
    try:
        yield net
    finally:
        net.stop()


def wait_client_ready(controller, net: TorNet, timeout: float = 30) -> None:
    """Wait until a client tor (an authenticated stem Controller) is bootstrapped to 100% and has
    a microdescriptor with a policy line for every exit ("Bootstrapped 100%" alone is not ready)."""
    import stem

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "PROGRESS=100" in controller.get_info("status/bootstrap-phase") and all(
                    "\np " in controller.get_info(f"md/id/{e.fingerprint}") for e in net.exits.values()):
                return
        except stem.ControllerError:  # no microdescriptor yet
            pass
        time.sleep(0.1)
    raise TimeoutError("client tor not ready")


def _selftest() -> bool:
    """A client tor, an origin and curl: through the `de` then the `us` exit, by IP and by name."""
    import http.server
    import tempfile
    import threading

    from stem.control import Controller

    with tempfile.TemporaryDirectory(prefix="tornet-") as tmp:
        net = start_tor_network(Path(tmp))
        print(f"network up in {net.startup_seconds:.1f} s, {net.memory_mib():.0f} MiB")
        client = origin = None
        try:
            class Handler(http.server.BaseHTTPRequestHandler):  # HTTP/1.0: the body ends at close
                def do_GET(self):  # answers the country of the exit that owns our peer socket
                    country = net.exit_country_of_peer(self.client_address)
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(str(country).encode())

                def log_message(self, *args):
                    pass

            origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=origin.serve_forever, daemon=True).start()
            data = Path(tmp) / "client"
            data.mkdir(mode=0o700)
            socks, control = _free_port("127.0.0.1"), _free_port("127.0.0.1")
            (data / "torrc").write_text("\n".join([  # like the project's code: its lines + %include
                f"DataDirectory {data}", f"SocksPort 127.0.0.1:{socks}", f"ControlPort 127.0.0.1:{control}",
                "CookieAuthentication 1", "RunAsDaemon 0", f"Log notice file {data / 'notice.log'}",
                "ExitNodes {de}", "StrictNodes 1", f"%include {net.client_torrc}"]) + "\n")
            started = time.monotonic()
            client = _spawn_tor(data / "torrc", data / "stdout.log")
            while True:
                try:
                    controller = Controller.from_port("127.0.0.1", control)
                    break
                except Exception:  # not listening yet
                    if client.poll() is not None or time.monotonic() - started > 10:
                        raise
                    time.sleep(0.1)
            with controller:
                controller.authenticate()
                wait_client_ready(controller, net)
                print(f"client ready in {time.monotonic() - started:.1f} s")
                ok = True
                for country in ("de", "us"):
                    controller.set_options({"ExitNodes": f"{{{country}}}", "StrictNodes": "1"})
                    for host in ("127.0.0.1", "origin.tor.test"):
                        t = time.monotonic()
                        url = f"http://{host}:{origin.server_address[1]}/"
                        got = subprocess.run(["curl", "-sS", "--max-time", "30", "--proxy-user",
                                              f"{country}-{host}:x", "--socks5-hostname", f"127.0.0.1:{socks}",
                                              url], capture_output=True, text=True)
                        answer = got.stdout or got.stderr.strip()
                        ok &= answer == country
                        print(f"  ExitNodes {{{country}}} {host:15} -> {answer} ({time.monotonic() - t:.2f}s)")
            print(f"memory with the client: {net.memory_mib() + _rss_mib(client.pid):.0f} MiB")
            print("PASS" if ok else "FAIL")
            return ok
        finally:
            if client and client.poll() is None:
                client.terminate()
                client.wait(5)
            if origin:
                origin.shutdown()
                origin.server_close()
            net.stop()


if __name__ == "__main__":
    sys.exit(0 if _selftest() else 1)
