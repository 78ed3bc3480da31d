# TEMPORARY stand-in (not committed)
from dataclasses import dataclass
from anonproxy.wire.headers import HOP_BY_HOP
DROP = frozenset({b"server", b"x-powered-by", b"x-aspnet-version", b"x-aspnetmvc-version", b"x-backend-server", b"via", b"x-runtime"})
@dataclass(frozen=True)
class BackendNames:
    backends: list
    def bases(self):
        out = []
        for a in self.backends:
            for scheme in (b"http://", b"https://", b"//"):
                out.append(scheme + a.authority().encode())
        return out
def response_fields(headers, names, public):
    out = []
    for n, v in headers:
        l = n.lower()
        if l in DROP:
            continue
        if l in (b"location", b"content-location", b"refresh"):
            for base in names.bases():
                i = v.find(base)
                if i >= 0:
                    v = v[:i] + public + v[i + len(base):]
                    break
        out.append((n, v))
    return out
def request_fields(headers, *, peer, proto, host, strip_auth):
    out = []
    ws = any(n.lower() == b"upgrade" for n, v in headers)
    for n, v in headers:
        l = n.lower()
        if l in (b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip", b"via") or l.startswith(b"proxy-"):
            continue
        if l in HOP_BY_HOP and not (ws and l in (b"upgrade", b"connection")):
            continue
        if strip_auth and l == b"authorization":
            continue
        out.append((n, v))
    if peer:
        out.append((b"Forwarded", f"for={peer};proto={proto}".encode() + b";host=" + host))
        out.append((b"X-Forwarded-For", peer.encode()))
    return out
