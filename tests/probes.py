"""Counting what a proxy process holds (file descriptors and memory from /proc, connection
tasks from its dashboard API), and raw-socket clients for the hardening and fault tests."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import h11
from helpers import recv_until


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds, from /proc."""
    found = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on, from /proc (not from anything it says)."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def receive_queue(local: tuple[str, int]) -> int | None:
    """Bytes the kernel holds unread for the established IPv4 TCP socket bound to `local`
    (from /proc/net/tcp; None when there is no such socket)."""
    want = f"{socket.inet_aton(local[0])[::-1].hex().upper()}:{local[1]:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "01":  # ESTABLISHED
                return int(fields[4].split(":")[1], 16)
    return None


def client_connections(pid: int, port: int) -> int:
    """Connections process `pid` holds on its listening port `port` (its clients), from /proc:
    sockets with that local port in any state but LISTEN."""
    inodes = socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A"
                        and fields[9] in inodes):
                    count += 1
    return count


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def get(sock: socket.socket, conn: h11.Connection, url: str) -> tuple[int, bytes]:
    """One GET on a kept-alive connection, read with a strict client."""
    sock.sendall(conn.send(h11.Request(method="GET", target=url, headers=[("Host", "x")])))
    sock.sendall(conn.send(h11.EndOfMessage()))
    status, body = 0, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            return status, b"".join(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed")


def socks5_connect(proxy, host: str, port: int) -> socket.socket:
    sock = proxy.connect()
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
    assert sock.recv(10)[:2] == b"\x05\x00"
    return sock


def http_connect(proxy, host: str, port: int) -> socket.socket:
    sock = proxy.connect()
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    return sock


def connections_now(admin_port: int) -> int:
    """The proxy's own count of connection tasks (the dashboard API's status, asked with the
    token the proxy left in the runtime directory, as the CLI does)."""
    from anonproxy.admin.control import call
    from anonproxy.wire.address import Address

    return call(Address("127.0.0.1", admin_port), "GET", "/api/status",
                timeout=10)["connections_now"]


def settle_tasks(admin_port: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while (now := connections_now(admin_port)) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def settle_fds(pid: int, allowed: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while open_fds(pid) > allowed and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_fds(pid)


def keep_alive_gets(proxy, url: str, connections: int, per_connection: int) -> None:
    """`url` answers b"good" (rawserver): a lean client, so the proxy is what the time goes to."""
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    failures = []

    def run() -> None:
        with proxy.connect() as sock:
            for _ in range(per_connection):
                sock.sendall(request)
                if not recv_until(sock, b"\r\n\r\ngood").endswith(b"\r\n\r\ngood"):
                    failures.append(url)
                    return

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures


def tunnels(proxy, raw, count: int) -> None:
    for _ in range(count):
        with http_connect(proxy, raw.host, raw.port) as sock:
            sock.sendall(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
            answers = b""
            while answers.count(b"\r\n\r\ngood") < 50 and (data := sock.recv(65536)):
                answers += data
            assert answers.count(b"\r\n\r\ngood") == 50
