"""A private Tor network on loopback, for end-to-end tests of the tor exits.

It builds, in a work directory: 1 directory authority (127.0.0.20), 1 middle relay (127.0.0.21)
and one exit relay per country (127.0.0.22, .23, ...), each a real `tor` on its own loopback
address with free ports; a GeoIP file that maps each exit's address to its country (so a client
can say `ExitNodes {de}`); and a DNS stub (dnslib, UDP and TCP on 127.0.0.1) that the exits use
to resolve `dns_names`. `client_torrc` is the fragment a client tor adds to join the network.
`python3 tests/tornet.py` runs a self-test: curl through a client tor, by IP and by name, via
the `de` exit and then the `us` exit.

Why the unusual options (see shared/TOR-TESTNET.md for how each was found):
- `TestingTorNetwork 1`, `DirAuthority`, `UseDefaultFallbackDirs 0`: a network of our own
  (allows private addresses, short timings); nothing is ever fetched from the real Tor network.
- Voting every 10 s (2 s vote/dist delays; 5 s is rejected) and `TestingV3AuthVotingStartOffset`
  chosen so the first vote falls about 4 s after launch: the first consensus comes in ~10 s.
- `TestingDirAuthVoteExit/Guard` (+ `IsStrict`): exits get the Exit flag although their policy
  has no port 80/443, and are never guards; `TestingMinExitFlagThreshold 0` likewise.
- Exit policy accepts 127.0.0.0/8 *and* `*:1024-65535`: clients judge exits by a per-port summary
  that ignores private ranges, so a 127/8-only policy leaves no usable exit. The origin in a test
  must therefore listen on a port >= 1024. Safety net: `OutboundBindAddress` on each relay's own
  127.0.0.X, since Linux refuses (EINVAL) to route a loopback source to a non-loopback address.
  (tor does not bind exit connections to 127/8 destinations, so all exits reach the origin from
  127.0.0.1 — hence `exit_country_of_peer`, which asks /proc which exit owns the socket.)
- `RefuseUnknownExits 0`: an exit that got the consensus late would refuse "unknown" relays.
- `ServerDNSResolvConfFile` -> our stub (exits ignore /etc/hosts and the host resolver is not on
  loopback); `ServerDNSDetectHijacking 0`, `ServerDNSTestAddresses 127.0.0.1`: no probes out.
- `DirCache 0` on middle/exits (13 MiB instead of 75 MiB each); `ConfluxEnabled 0` for clients
  (one stream = one circuit = one exit); `LearnCircuitBuildTimeout 0`: a timeout learned from
  millisecond loopback circuits would make a briefly busy CI machine drop circuits.
- Tor processes die with the test process (PR_SET_PDEATHSIG, set by the thread that starts them)
  and `stop()` ends them; never `__OwningControllerProcess` with stem (tor exits when the
  controller closes).
"""

from __future__ import annotations

import ctypes
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
TOR_GENCERT = shutil.which("tor-gencert") or "/usr/sbin/tor-gencert"
VOTING = 10  # seconds between consensuses
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class Relay:
    nickname: str
    address: str
    or_port: int
    datadir: Path
    country: str | None = None  # exits only
    dir_port: int | None = None  # authority only
    fingerprint: str = ""
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.datadir / "notice.log"


@dataclass
class TorNet:
    workdir: Path
    client_torrc: Path
    exits: dict[str, Relay]
    relays: list[Relay]
    dns_names: dict[str, str]
    dns_port: int = 0
    startup_seconds: float = 0.0
    _dns_servers: list = field(default_factory=list, repr=False)

    @property
    def authority(self) -> Relay:
        return self.relays[0]

    def exit_country_of_peer(self, peer: tuple) -> str | None:
        """The country of the exit whose tor owns the TCP socket with local address `peer` (what
        the origin saw as its peer). Call it while that connection is still open: once closed,
        the socket has no owner (TIME_WAIT has inode 0)."""
        want = (_normal_ip(peer[0]), int(peer[1]))
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] != "0" and _proc_address(fields[1]) == want:
                    inodes.add(f"socket:[{fields[9]}]")
        for country, relay in self.exits.items():
            try:
                fds = os.scandir(f"/proc/{relay.process.pid}/fd")
                if any(_readlink(fd.path) in inodes for fd in fds):
                    return country
            except OSError:  # the exit died meanwhile
                continue
        return None

    def memory_mib(self) -> float:
        """Resident memory of all tor processes of the network."""
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
    """Start the network; return once the authority's consensus lists every relay Running, each
    exit with the Exit flag and a microdescriptor with an accepting policy summary (a client that
    starts now bootstraps in a few seconds and can build circuits through every exit)."""
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dns_names = {"origin.tor.test": "127.0.0.1"} if dns_names is None else dict(dns_names)
    relays = [Relay("auth", "127.0.0.20", 0, workdir / "auth"), Relay("middle", "127.0.0.21", 0, workdir / "middle")]
    relays += [Relay(f"exit{cc}", f"127.0.0.{22 + i}", 0, workdir / f"exit{cc}", country=cc.lower())
               for i, cc in enumerate(countries)]
    net = TorNet(workdir, workdir / "client.torrc", {r.country: r for r in relays[2:]}, relays, dns_names)
    try:
        net._dns_servers, net.dns_port = _start_dns_stub(dns_names)
        (workdir / "resolv.conf").write_text(f"nameserver 127.0.0.1:{net.dns_port}\n")
        geoip = workdir / "geoip"  # lines INTIPLOW,INTIPHIGH,CC
        geoip.write_text("".join(f"{int(ipaddress.ip_address(r.address))},{int(ipaddress.ip_address(r.address))},"
                                 f"{r.country.upper()}\n" for r in net.exits.values()))
        (workdir / "geoip6").write_text("")  # not the 6 MB system file
        auth = net.authority
        auth.dir_port = _free_port(auth.address)
        for r in relays:
            r.or_port = _free_port(r.address)
            r.datadir.mkdir(mode=0o700, exist_ok=True)
        _generate_keys(relays, auth)
        v3ident = next(line.split()[1] for line in (auth.datadir / "keys" / "authority_certificate").read_text()
                       .splitlines() if line.startswith("fingerprint "))
        common = ["TestingTorNetwork 1",
                  f"DirAuthority {auth.nickname} orport={auth.or_port} no-v2 v3ident={v3ident} "
                  f"{auth.address}:{auth.dir_port} {auth.fingerprint}",
                  "UseDefaultFallbackDirs 0", f"GeoIPFile {geoip}", f"GeoIPv6File {workdir / 'geoip6'}"]
        net.client_torrc.write_text("\n".join(common + ["ConfluxEnabled 0", "LearnCircuitBuildTimeout 0"]) + "\n")
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
    auth, exits = net.authority, list(net.exits.values())
    lines = [f"DataDirectory {r.datadir}", f"Nickname {r.nickname}", "RunAsDaemon 0", "SocksPort 0",
             f"Log notice file {r.log}", f"Address {r.address}", f"ORPort {r.address}:{r.or_port}",
             f"OutboundBindAddress {r.address}", "AssumeReachable 1", "ShutdownWaitLength 0",
             "ContactInfo tornet@tor.test"]
    if r is auth:
        offset = int(time.time() + 8) % VOTING  # first consensus at ~launch+8 s: votes at ~launch+4 s
        return lines + [
            "AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1", f"DirPort {r.address}:{r.dir_port}",
            "ExitRelay 0", "ExitPolicy reject *:*",
            f"V3AuthVotingInterval {VOTING}", "V3AuthVoteDelay 2", "V3AuthDistDelay 2",
            f"TestingV3AuthInitialVotingInterval {VOTING}", "TestingV3AuthInitialVoteDelay 2",
            "TestingV3AuthInitialDistDelay 2", f"TestingV3AuthVotingStartOffset {offset}",
            "TestingDirAuthVoteExit " + ",".join("$" + e.fingerprint for e in exits),
            "TestingDirAuthVoteExitIsStrict 1", "TestingMinExitFlagThreshold 0",
            f"TestingDirAuthVoteGuard ${auth.fingerprint},${net.relays[1].fingerprint}",
            "TestingDirAuthVoteGuardIsStrict 1"]
    lines.append("DirCache 0")
    if r.country is None:
        return lines + ["ExitRelay 0", "ExitPolicy reject *:*"]
    return lines + [
        "ExitRelay 1", "ExitPolicyRejectPrivate 0", "IPv6Exit 0", f"OutboundBindAddressExit {r.address}",
        "ExitPolicy accept 127.0.0.0/8:*,accept *:1024-65535,reject *:*", "RefuseUnknownExits 0",
        f"ServerDNSResolvConfFile {net.workdir / 'resolv.conf'}", "ServerDNSDetectHijacking 0",
        "ServerDNSTestAddresses 127.0.0.1"]


def _generate_keys(relays: list[Relay], auth: Relay) -> None:
    """Authority v3 keys (tor-gencert) and every relay's identity (tor --list-fingerprint), in
    parallel: RSA key generation is the slow part (1-2 s)."""
    (auth.datadir / "keys").mkdir(mode=0o700, exist_ok=True)
    keys = auth.datadir / "keys"
    jobs = [subprocess.Popen([TOR_GENCERT, "--create-identity-key", "-m", "12", "--passphrase-fd", "0",
                              "-a", f"{auth.address}:{auth.dir_port}", "-i", str(keys / "authority_identity_key"),
                              "-s", str(keys / "authority_signing_key"), "-c", str(keys / "authority_certificate")],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    jobs[0].stdin.write(b"\n")  # an empty passphrase
    jobs[0].stdin.close()
    jobs += [subprocess.Popen([TOR, "--list-fingerprint", "--defaults-torrc", os.devnull, "--hush",
                               "--DataDirectory", str(r.datadir), "--ORPort", f"{r.address}:{r.or_port}",
                               "--Nickname", r.nickname], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for r in relays]
    for job in jobs:
        if job.wait(60) != 0:
            raise RuntimeError(f"key generation failed: {job.args}")
    for r in relays:
        r.fingerprint = (r.datadir / "fingerprint").read_text().split()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn_tor(torrc: Path, stdout: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    with open(stdout, "wb") as out:
        return subprocess.Popen([TOR, "--defaults-torrc", os.devnull, "-f", str(torrc), *extra],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)


def _wait_for_consensus(net: TorNet, deadline: float) -> None:
    auth = net.authority
    base = f"http://{auth.address}:{auth.dir_port}/tor"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy variables
    problem = "no consensus yet"
    while time.monotonic() < deadline:
        for r in net.relays:
            if r.process.poll() is not None:
                raise RuntimeError(f"tor {r.nickname} exited: {_tail(r.log)}{_tail(r.datadir / 'stdout.log')}")
        try:
            text = opener.open(f"{base}/status-vote/current/consensus-microdesc", timeout=5).read().decode()
            entries, nick = {}, None  # nickname -> (flags, microdescriptor digest)
            for line in text.splitlines():
                word, _, rest = line.partition(" ")
                if word == "r":
                    nick = rest.split()[0]
                    entries[nick] = [set(), ""]
                elif word == "s" and nick:
                    entries[nick][0] = set(rest.split())
                elif word == "m" and nick:
                    entries[nick][1] = rest.split()[0]
            missing = [r.nickname for r in net.relays if "Running" not in entries.get(r.nickname, [()])[0]]
            missing += [e.nickname + " (Exit)" for e in net.exits.values()
                        if "Exit" not in entries.get(e.nickname, [()])[0]]
            if missing:
                problem = f"consensus lacks {missing}"
            else:
                digests = "-".join(entries[e.nickname][1] for e in net.exits.values())
                mds = opener.open(f"{base}/micro/d/{digests}", timeout=5).read().decode()
                if mds.count("\np accept ") == len(net.exits):
                    return
                problem = "exit microdescriptors lack an accepting policy"
        except OSError as error:
            problem = f"authority: {error}"
        time.sleep(0.25)
    raise TimeoutError(f"tor network not ready: {problem}; logs in {net.workdir}")


def _start_dns_stub(names: dict[str, str]) -> tuple[list, int]:
    from dnslib import QTYPE, RCODE, RR, A
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    table = {k.lower().rstrip("."): v for k, v in names.items()}

    class Resolver(BaseResolver):
        def resolve(self, request, handler):
            reply, q = request.reply(), request.q
            name = str(q.qname).rstrip(".").lower()  # tor randomizes the case (0x20 hack)
            if name not in table:
                reply.header.rcode = RCODE.NXDOMAIN
            elif q.qtype == QTYPE.A:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(table[name]), ttl=60))
            return reply  # a known name with another qtype: NOERROR, no answer

    quiet = DNSLogger(logf=lambda message: None)
    for _ in range(20):  # a port free for both UDP and TCP
        port = _free_port("127.0.0.1", socket.SOCK_DGRAM)
        try:
            servers = [DNSServer(Resolver(), "127.0.0.1", port, tcp=tcp, logger=quiet) for tcp in (False, True)]
        except OSError:
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


def _proc_address(field: str) -> tuple[str, int]:
    """'0100007F:1F90' (the address as native-endian 32-bit words) -> ('127.0.0.1', 8080)."""
    hexip, hexport = field.split(":")
    raw = b"".join(struct.pack("=I", int(hexip[i:i + 8], 16)) for i in range(0, len(hexip), 8))
    return _normal_ip(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)), int(hexport, 16)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n" if path.exists() else ""


@pytest.fixture(scope="session")
def tornet(tmp_path_factory) -> TorNet:
    if not (os.access(TOR, os.X_OK) and os.access(TOR_GENCERT, os.X_OK)):
        pytest.skip(f"{TOR} or tor-gencert is missing (apt-get install tor)")
    pytest.importorskip("dnslib")
    net = start_tor_network(tmp_path_factory.mktemp("tornet"))
    try:
        yield net
    finally:
        net.stop()
