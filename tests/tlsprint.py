"""TLS ClientHello fingerprints for tests: JA3 (Salesforce, 2017) and JA4 (FoxIO, the TLS
client part), computed from the raw bytes of a ClientHello record, GREASE values left out as
both specify. Enough to notice a change in what the proxy's own TLS looks like to a site."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from dataclasses import dataclass

GREASE = {0x0A0A + 0x1010 * i for i in range(16)}


@dataclass
class Hello:
    version: int
    ciphers: list[int]
    extensions: list[int]
    curves: list[int]
    point_formats: list[int]
    signature_algorithms: list[int]
    alpn: list[bytes]
    supported_versions: list[int]
    sni: bool


def _u16s(data: bytes) -> list[int]:
    return [v for (v,) in struct.iter_unpack("!H", data)]


def parse(record: bytes) -> Hello:
    """A ClientHello from its TLS record (the first bytes a TLS client sends)."""
    assert record[0] == 0x16 and record[5] == 0x01, "not a ClientHello"
    body = record[9:]
    version = struct.unpack("!H", body[:2])[0]
    at = 2 + 32
    at += 1 + body[at]  # session id
    n = struct.unpack("!H", body[at:at + 2])[0]
    ciphers = _u16s(body[at + 2:at + 2 + n])
    at += 2 + n
    at += 1 + body[at]  # compression methods
    end = at + 2 + struct.unpack("!H", body[at:at + 2])[0]
    at += 2
    hello = Hello(version, ciphers, [], [], [], [], [], [], False)
    while at < end:
        kind, size = struct.unpack("!HH", body[at:at + 4])
        data = body[at + 4:at + 4 + size]
        at += 4 + size
        hello.extensions.append(kind)
        if kind == 0x0000:
            hello.sni = True
        elif kind == 0x000A:
            hello.curves = _u16s(data[2:])
        elif kind == 0x000B:
            hello.point_formats = list(data[1:])
        elif kind == 0x000D:
            hello.signature_algorithms = _u16s(data[2:])
        elif kind == 0x0010:
            i, names = 2, []
            while i < len(data):
                names.append(data[i + 1:i + 1 + data[i]])
                i += 1 + data[i]
            hello.alpn = names
        elif kind == 0x002B:
            hello.supported_versions = _u16s(data[1:])
    return hello


def _clean(values: list[int]) -> list[int]:
    return [v for v in values if v not in GREASE]


def ja3(hello: Hello) -> tuple[str, str]:
    """(the JA3 string, its MD5)."""
    parts = [str(hello.version), "-".join(map(str, _clean(hello.ciphers))),
             "-".join(map(str, _clean(hello.extensions))),
             "-".join(map(str, _clean(hello.curves))), "-".join(map(str, hello.point_formats))]
    text = ",".join(parts)
    return text, hashlib.md5(text.encode()).hexdigest()  # (JA3 is defined on MD5)


def ja4(hello: Hello) -> str:
    """The JA4 fingerprint (TLS over TCP)."""
    versions = _clean(hello.supported_versions) or [hello.version]
    version = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10"}.get(max(versions), "00")
    ciphers, extensions = _clean(hello.ciphers), _clean(hello.extensions)
    alpn = hello.alpn[0].decode() if hello.alpn else ""
    alpn = alpn[0] + alpn[-1] if alpn else "00"
    head = (f"t{version}{'d' if hello.sni else 'i'}{min(len(ciphers), 99):02d}"
            f"{min(len(extensions), 99):02d}{alpn}")

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"

    cipher_text = ",".join(f"{c:04x}" for c in sorted(ciphers))
    ext_text = ",".join(f"{e:04x}" for e in sorted(e for e in extensions if e not in (0, 0x10)))
    sigs = ",".join(f"{s:04x}" for s in hello.signature_algorithms)
    return f"{head}_{digest(cipher_text)}_{digest(ext_text + ('_' + sigs if sigs else ''))}"


class HelloCatcher:
    """A loopback listener that keeps the first record of each connection and closes it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.records: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while len(data) < 5 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.records.append(data)

    def close(self) -> None:
        self.sock.close()
