"""[[reverse]] entries in a profile: what each key takes, the checks across keys (listens that
clash, loops, the onion's Tor exit, files, workers), `listen = "off"`, and what `check` and
`schema` say of them. Real files in tmp_path through load_profile, and `anonproxy check` and
`anonproxy schema` as the user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from anonproxy.config.profiles import ProfileError, load_profile
from anonproxy.config.reverse import Reverse
from anonproxy.wire.address import Address

TOR = '[exits.direct]\n[exits.tor]\ntor = { control = "managed" }\n'
ENTRY = '[[reverse]]\nlisten = "127.0.0.1:8443"\nbackends = ["http://127.0.0.1:9001"]\n'
KEY = "A" * 52  # an x25519 public key as tor writes it: 52 base32 characters


def write(tmp_path, text: str, name: str = "p.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def entry(*lines: str, listen: str = "127.0.0.1:8443",
          backends: str = '["http://127.0.0.1:9001"]') -> str:
    return (f'[[reverse]]\nlisten = "{listen}"\nbackends = {backends}\n'
            + "".join(line + "\n" for line in lines))


def anonproxy(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# (profile text, what the error says): each key on its own
PER_KEY = [
    (entry(backends='["https://127.0.0.1:9001"]'),
     ('reverse[1].backends[1] = "https://127.0.0.1:9001": only http:// backends are supported '
     "(a backend on this machine or a private network)")),
    (entry(backends='["ftp://127.0.0.1:21"]'),
     'reverse[1].backends[1] = "ftp://127.0.0.1:21": write a backend as http://HOST:PORT'),
    (entry(backends='["127.0.0.1:9001"]'), "write a backend as http://HOST:PORT"),
    (entry(backends='["http://127.0.0.1:9001/app"]'), "no path, query or fragment"),
    (entry(backends='["http://127.0.0.1:9001?x=1"]'), "no path, query or fragment"),
    (entry(backends='["http://127.0.0.1:9001/#top"]'), "no path, query or fragment"),
    (entry(backends='["http://me:secret@127.0.0.1:9001"]'), "no user info"),
    (entry(backends='["http://127.0.0.1"]'), "the port is missing"),
    (entry(backends='["http://127.0.0.1:0"]'), "the port is outside 1-65535"),
    (entry(backends='["http://127.0.0.1:70000"]'), "the port is outside 1-65535"),
    (entry(backends='["http://::1:9001"]'), "put IPv6 addresses in brackets"),
    (entry(backends='["http://bad_name!:9001"]'), "is not a valid host name"),
    (entry(backends='["http://app.example\\n:9001"]'), "printable ASCII without spaces"),
    (entry(backends='["http://127.0.0.1:9001 "]'), "printable ASCII without spaces"),
    (entry(backends='["http://app.onion:80"]'), "is an onion service"),
    (entry(backends='["http://printer.local:80"]'), "multicast DNS name"),
    (entry(backends="[9001]"), "reverse[1].backends[1] = 9001: write a backend as a string"),
    (entry(backends='["http://127.0.0.1:9001", "http://127.0.0.1:9002", "HTTP://127.0.0.1:9001/"]'),
     "reverse[1].backends: http://127.0.0.1:9001 is listed twice"),
    (entry(backends="[]"), "reverse[1].backends: List should have at least 1 item"),
    (entry(backends=json.dumps([f"http://127.0.0.1:{9000 + n}" for n in range(65)])),
     "reverse[1].backends: List should have at most 64 items"),
    ('[[reverse]]\nlisten = "127.0.0.1:8443"\n', "reverse[1].backends: required key is missing"),
    ('[[reverse]]\nbackends = ["http://127.0.0.1:9001"]\n',
     "reverse[1].listen: required key is missing"),
    (entry(listen="127.0.0.1:99999"),
     'reverse[1].listen = "127.0.0.1:99999": the port is outside 0-65535'),
    (entry(listen="off"), 'reverse[1].listen = "off"'),
    (entry('strategy = "random"'), 'reverse[1].strategy = "random": Input should be'),
    (entry('strategy = "sticky"'), 'reverse[1].strategy = "sticky"'),
    (entry('hosts = ["*.app.example"]'),
     'reverse[1].hosts[1] = "*.app.example": no wildcards'),
    (entry('hosts = ["app.example:8443"]'), 'reverse[1].hosts[1] = "app.example:8443": no port'),
    (entry('hosts = ["[::1]:8443"]'), "no port"),
    (entry('hosts = ["app example"]'), "printable ASCII without spaces"),
    (entry('hosts = ["app.example\\n"]'), "printable ASCII without spaces"),
    (entry('hosts = ["app!.example"]'), "is not a valid host name"),
    (entry("hosts = []"), "reverse[1].hosts: List should have at least 1 item"),
    (entry('hosts = ["App.Example", "app.example."]'),
     "reverse[1].hosts: app.example is listed twice"),
    (entry('tls = { cert = "c.pem" }'), "reverse[1].tls.key: required key is missing"),
    (entry('tls = { cert = "", key = "k.pem" }'), 'reverse[1].tls.cert = ""'),
    (entry('tls = "c.pem"'), "reverse[1].tls"),
    (entry('auth = { username = "u", password = "short" }'),
     'reverse[1].auth.password = "short": String should have at least 8 characters'),
    (entry('auth = { username = "", password = "long enough" }'), "reverse[1].auth.username"),
    (entry('health = { path = "healthz" }'),
     'reverse[1].health.path = "healthz": a path starts with "/"'),
    (entry('health = { path = "/a b" }'), "printable ASCII without spaces or #"),
    (entry('health = { path = "/a#b" }'), "printable ASCII without spaces or #"),
    (entry('health = { path = "/' + "a" * 2048 + '" }'), "at most 2048 characters"),
    (entry('health = { interval = 5 }'), "reverse[1].health.interval: unknown key"),
    (entry('cache = "yes"'), 'reverse[1].cache = "yes": Input should be a valid boolean'),
    (entry("forwarded = 1"), "reverse[1].forwarded = 1: Input should be a valid boolean"),
    (entry('onion = { key = "k", tor = "tor", clients = ["abc"] }'),
     'reverse[1].onion.clients[1] = "abc": not an x25519 public key in base32'),
    (entry(f'onion = {{ key = "k", tor = "tor", clients = ["{KEY[:-1]}1"] }}'),
     "onion.clients[1]"),
    (entry(f'onion = {{ key = "k", tor = "tor", clients = ["{KEY}\\n"] }}'), "onion.clients[1]"),
    (entry(f'onion = {{ key = "k", tor = "tor", clients = ["{KEY}", "{KEY.lower()}"] }}'),
     f"reverse[1].onion.clients: {KEY} is listed twice"),
    (entry('onion = { key = "k", tor = "tor", max_streams = 0 }'),
     "reverse[1].onion.max_streams = 0: Input should be greater than or equal to 1"),
    (entry('onion = { key = "k", tor = "tor", max_streams = 65536 }'),
     "reverse[1].onion.max_streams = 65536"),
    (entry('onion = { key = "k" }'), "reverse[1].onion.tor: required key is missing"),
    (entry('onion = { key = "k", tor = "no such!" }'), 'reverse[1].onion.tor = "no such!"'),
    (entry('lissen = "127.0.0.1:1"'), "reverse[1].lissen: unknown key"),
    (ENTRY + entry('strategy = "x"', listen="127.0.0.1:8444"), 'reverse[2].strategy = "x"'),
    ('reverse = { listen = "127.0.0.1:8443" }\n', "reverse: Input should be a valid list"),
    ('listen = "OFF"\n', ('listen = "OFF": expected host:port (the port is missing); write it '
                         'as HOST:PORT, e.g. 127.0.0.1:8118 (or "off": the reverse entries '
                         'alone)')),
]

# (profile text, what the error says): across keys, once every key is valid on its own
ACROSS_KEYS = [
    ('listen = "off"\n',
     'listen = "off": no [[reverse]] entry either, so nothing would run'),
    (entry(listen="0.0.0.0:8443"),
     ('reverse[1].listen = "0.0.0.0:8443": listening on every interface exposes this entry\'s '
     "backends beyond this machine")),
    (entry(listen="192.0.2.1:8443"), "listening on 192.0.2.1 exposes this entry's backends"),
    ('listen = "off"\n' + entry(listen="[::]:8443"), "listening on every interface"),
    (entry(listen="127.0.0.1:8118"),
     'reverse[1].listen = "127.0.0.1:8118": the same address as listen'),
    ('admin = "127.0.0.1:8119"\n' + entry(listen="127.0.0.1:8119"),
     'reverse[1].listen = "127.0.0.1:8119": the same address as admin.listen'),
    ('listen = "off"\nadmin = "127.0.0.1:8443"\n' + ENTRY,
     'reverse[1].listen = "127.0.0.1:8443": the same address as admin.listen'),
    (ENTRY + entry(backends='["http://127.0.0.1:9002"]'),
     'reverse[2].listen = "127.0.0.1:8443": the same address as reverse[1].listen'),
    ('allow = ["10.0.0.0/8"]\n' + entry(listen="0.0.0.0:8443") + ENTRY,
     'reverse[2].listen = "127.0.0.1:8443": the same port as reverse[1].listen (0.0.0.0:8443)'),
    ('allow = ["10.0.0.0/8"]\n' + entry(listen="[::]:8118"), "the same port as listen"),
    (entry(backends='["http://127.0.0.1:8118"]'),
     ('reverse[1].backends[1] = "http://127.0.0.1:8118": that is this profile\'s own listen '
     "(a loop)")),
    (entry(backends='["http://127.0.0.1:9001", "http://localhost:8118"]'),
     'reverse[1].backends[2] = "http://localhost:8118": that is this profile\'s own listen'),
    ('admin = "127.0.0.1:8119"\n' + entry(backends='["http://127.0.0.1:8119"]'),
     "that is this profile's own admin.listen (a loop)"),
    (entry(backends='["http://127.0.0.1:8443"]'),
     "that is this profile's own reverse[1].listen (a loop)"),
    (entry(listen="127.0.0.1:8444", backends='["http://127.0.0.1:8443"]') + ENTRY,
     ('reverse[1].backends[1] = "http://127.0.0.1:8443": that is this profile\'s own '
     "reverse[2].listen")),
    ('allow = ["10.0.0.0/8"]\n' + entry(listen="0.0.0.0:8443", backends='["http://127.0.0.1:8443"]'),
     "reverse[1].listen (a loop)"),
    (entry('onion = { key = "app.key", tor = "tor" }'),
     ('reverse[1].onion.tor = "tor": no exit by that name; an onion service is published '
     'through a Tor exit of the profile; Tor exits: none (add one, e.g. [exits.tor] tor = '
     '{ control = "managed" })')),
    (TOR + entry('onion = { key = "app.key", tor = "direct" }'),
     ('reverse[1].onion.tor = "direct": not a Tor exit; an onion service is published through '
     "a Tor exit of the profile; Tor exits: tor")),
    ('workers = 2\n' + ENTRY, "workers = 2: reverse entries need workers = 1"),
]


@pytest.mark.parametrize("text, expected", PER_KEY + ACROSS_KEYS,
                         ids=[f"{n}" for n in range(len(PER_KEY) + len(ACROSS_KEYS))])
def test_a_broken_reverse_entry_names_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert all(line.startswith(path + ": ") for line in message.splitlines()), message
    assert expected in message, message
    assert "Traceback" not in message and "pydantic" not in message


# (files made beside the profile, the entry's line, what the error says)
FILES = [
    ((), 'tls = { cert = "cert.pem", key = "key.pem" }',
     ('reverse[1].tls.cert = "cert.pem": no such file: {dir}/cert.pem (a path relative to the '
     "profile's folder)")),
    (("cert.pem",), 'tls = { cert = "cert.pem", key = "keys/key.pem" }',
     'reverse[1].tls.key = "keys/key.pem": no such file: {dir}/keys/key.pem'),
    (("cert.pem",), 'tls = { cert = "cert.pem", key = "/nonexistent/key.pem" }',
     'reverse[1].tls.key = "/nonexistent/key.pem": no such file: /nonexistent/key.pem'),
    ((), 'onion = { key = "keys/app.key", tor = "tor" }',
     'reverse[1].onion.key = "keys/app.key": no folder {dir}/keys to write the key file in'),
    (("keys/",), 'onion = { key = "keys", tor = "tor" }',
     'reverse[1].onion.key = "keys": {dir}/keys is a folder; name the key file'),
]


@pytest.mark.parametrize("made, line, expected", FILES)
def test_the_files_a_reverse_entry_names_are_looked_for_beside_the_profile(tmp_path, made,
                                                                          line, expected):
    for name in made:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("not checked here")
    path = write(tmp_path, TOR + entry(line))
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert message.startswith(f"{path}: " + expected.format(dir=tmp_path)), message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines())


FULL = TOR + f"""
[[reverse]]
listen = "127.0.0.1:8443"
backends = ["http://127.0.0.1:9001", "HTTP://LocalHost:9002/", "http://[::1]:9003",
            "http://127.1:9004"]
strategy = "least-connections"
hosts = ["App.Example.", "[::1]", "192.0.2.7"]
tls = {{ cert = "certs/cert.pem", key = "certs/key.pem" }}
auth = {{ username = "u", password = "a long secret" }}
health = {{ path = "/healthz?full=1" }}
cache = true
forwarded = true
onion = {{ key = "app.onion-key", tor = "tor", clients = ["{KEY.lower()}"], max_streams = 8 }}

[[reverse]]
listen = "127.0.0.1:8444"
backends = ["http://127.0.0.1:9001"]
"""


def test_a_full_entry_loads_with_its_values_normalised(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "cert.pem").write_text("-")
    (tmp_path / "certs" / "key.pem").write_text("-")
    loaded = load_profile(write(tmp_path, FULL))
    first, second = loaded.profile.reverse
    assert first.backends == ["http://127.0.0.1:9001", "http://localhost:9002",
                              "http://[::1]:9003", "http://127.0.0.1:9004"]
    assert first.backend_addresses == [Address("127.0.0.1", 9001), Address("localhost", 9002),
                                       Address("::1", 9003), Address("127.0.0.1", 9004)]
    assert first.hosts == ["app.example", "::1", "192.0.2.7"]
    assert first.strategy == "least-connections" and first.cache and first.forwarded
    assert first.onion is not None and first.onion.clients == [KEY]
    assert first.onion.max_streams == 8 and first.health is not None
    assert first.listen_address == Address("127.0.0.1", 8443)
    assert first.tls is not None
    assert loaded.resolve_path(first.tls.cert) == tmp_path / "certs" / "cert.pem"
    assert loaded.resolve_path(first.onion.key) == tmp_path / "app.onion-key"
    assert loaded.resolve_path("/etc/x.pem").as_posix() == "/etc/x.pem"
    # the defaults
    assert (second.strategy, second.hosts, second.tls, second.auth, second.health, second.cache,
            second.forwarded, second.onion) == ("round-robin", None, None, None, None, False,
                                                False, None)
    assert loaded.profile.forwarding and loaded.profile.listen_address == Address("127.0.0.1",
                                                                                  8118)


def test_listen_off_runs_the_reverse_entries_alone_and_is_named_by_the_first(tmp_path):
    loaded = load_profile(write(tmp_path, 'listen = "off"\n' + entry(listen="127.0.0.1:8444")
                                + ENTRY))
    assert not loaded.profile.forwarding
    # what names this serve in its runtime files: the first entry's address
    assert loaded.profile.listen_address == Address("127.0.0.1", 8444)
    # with no forward proxy, its usual address is free for a backend or an entry
    load_profile(write(tmp_path, 'listen = "off"\n' + entry(listen="127.0.0.1:8118")))
    load_profile(write(tmp_path, 'listen = "off"\n' + entry(backends='["http://127.0.0.1:8118"]')))
    assert load_profile(write(tmp_path, "")).profile.reverse == []


@pytest.mark.parametrize("text", [
    'allow = ["10.0.0.0/8"]\n' + entry(listen="0.0.0.0:8443"),
    entry('auth = { username = "u", password = "long enough" }', listen="0.0.0.0:8443"),
    # port 0 (any free port) never clashes
    'listen = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n' + entry(listen="127.0.0.1:0") * 2,
    # another address on the same port, or the same address on another port
    entry(listen="127.0.0.2:8118") + entry(listen="[::1]:8118"),
    # an IPv4 wildcard does not cover IPv6 addresses
    'allow = ["10.0.0.0/8"]\nlisten = "0.0.0.0:8118"\n' + entry(listen="[::1]:8118"),
    # a backend on another port of this machine, or on our port of another machine
    entry(backends='["http://127.0.0.1:8119", "http://192.0.2.1:8118", "http://[::1]:9001"]'),
    TOR + entry('onion = { key = "app.key", tor = "tor" }'),
    '[exits.direct]\n[exits.mine]\ntor = { control = "127.0.0.1:9051" }\n'
    + entry('onion = { key = "app.key", tor = "mine" }'),
])
def test_these_entries_are_accepted(tmp_path, text):
    assert load_profile(write(tmp_path, text)).profile.reverse


def test_reverse_entries_leave_the_forward_proxy_settings_as_they_were(tmp_path):
    """The main listen still needs allow or auth beyond loopback, and the entry's auth is not
    the proxy's."""
    text = ('listen = "0.0.0.0:8118"\n'
            + entry('auth = { username = "u", password = "long enough" }'))
    with pytest.raises(ProfileError) as error:
        load_profile(write(tmp_path, text))
    assert ('listen = "0.0.0.0:8118": listening on every interface exposes the proxy'
            in str(error.value))


def test_check_prints_each_entry_and_never_its_password(tmp_path):
    (tmp_path / "c.pem").write_text("-")
    (tmp_path / "k.pem").write_text("-")
    write(tmp_path, 'listen = "off"\n' + TOR + entry(
        'strategy = "failover"', 'tls = { cert = "c.pem", key = "k.pem" }',
        'auth = { username = "alice", password = "hunter2-secret" }', "cache = true",
        f'onion = {{ key = "app.key", tor = "tor", clients = ["{KEY}"] }}',
        backends='["http://127.0.0.1:9001", "http://127.0.0.1:9002"]') + entry(
        listen="127.0.0.1:8444"))
    out = anonproxy("check", "p.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "  listen   off (no forward proxy: the reverse entries alone)" in lines
    assert ("  reverse 1  127.0.0.1:8443 -> http://127.0.0.1:9001, http://127.0.0.1:9002 "
            "(failover); tls c.pem k.pem; auth Basic (user alice); cache; onion through exit "
            "tor (key app.key, 1 authorized client)") in lines
    assert "  reverse 2  127.0.0.1:8444 -> http://127.0.0.1:9001 (round-robin)" in lines
    assert "hunter2" not in out.stdout + out.stderr
    assert lines[-1] == "ok"


@pytest.mark.parametrize("text, expected", [
    (entry(backends='["https://127.0.0.1:9001"]'),
     ('anonproxy: p.toml: reverse[1].backends[1] = "https://127.0.0.1:9001": only http:// '
     "backends are supported (a backend on this machine or a private network)")),
    (ENTRY * 2, ('anonproxy: p.toml: reverse[2].listen = "127.0.0.1:8443": the same address '
                "as reverse[1].listen")),
    (TOR + entry('tls = { cert = "c.pem", key = "k.pem" }'),
     'anonproxy: p.toml: reverse[1].tls.cert = "c.pem": no such file: {dir}/c.pem'),
    ('listen = "off"\n', 'anonproxy: p.toml: listen = "off": no [[reverse]] entry either'),
])
def test_check_refuses_a_broken_entry_with_one_line_naming_file_key_and_value(tmp_path, text,
                                                                              expected):
    write(tmp_path, text)
    out = anonproxy("check", "p.toml", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(expected.format(dir=tmp_path)), out.stderr
    assert "Traceback" not in out.stderr


def test_schema_follows_the_models():
    out = anonproxy("schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    defs = schema["$defs"]
    assert schema["properties"]["reverse"]["items"] == {"$ref": "#/$defs/Reverse"}
    assert set(defs["Reverse"]["properties"]) == set(Reverse.model_fields)
    assert defs["Reverse"]["required"] == ["listen", "backends"]
    assert set(defs["Onion"]["properties"]) == {"key", "tor", "clients", "max_streams"}
    assert set(defs["ReverseTls"]["properties"]) == {"cert", "key"}
    assert set(defs["ReverseHealth"]["properties"]) == {"path"}
    assert defs["Reverse"]["properties"]["strategy"]["enum"] == [
        "round-robin", "least-connections", "failover"]


def _reverse_doc() -> str:
    """docs/profiles.md's [[reverse]] example: the toml block that has one."""
    text = (ROOT / "docs" / "profiles.md").read_text()
    found = [b for b in re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
             if re.search(r"^\[\[reverse\]\]", b, re.MULTILINE)]
    assert len(found) == 1
    return found[0]


def test_the_documented_reverse_example_is_accepted_by_check(tmp_path):
    doc = _reverse_doc()
    for name in re.findall(r'"([\w./-]+\.pem)"', doc):
        (tmp_path / name).write_text("-")
    (tmp_path / "site.toml").write_text(doc)
    out = anonproxy("check", "site.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "  listen   off (no forward proxy: the reverse entries alone)" in out.stdout


def test_the_docs_name_every_key_of_a_reverse_entry():
    doc = _reverse_doc()
    written = set(re.findall(r"^#?\s*(\w+)\s*=", doc, re.MULTILINE))
    written |= set(re.findall(r"[{,]\s*(\w+)\s*=", doc))
    keys = set(Reverse.model_fields) | {"cert", "key", "path", "tor", "clients", "max_streams"}
    assert keys <= written, keys - written


def test_reverse_models_imported_first_load_no_pydantic_plugins_and_leave_the_environment():
    code = ("import os, pydantic.plugin._loader as loader\n"
            "import anonproxy.config.reverse as r\n"
            "assert os.environ.get('PYDANTIC_DISABLE_PLUGINS') == 'mine', 'changed'\n"
            "import anonproxy.config.models\n"
            "assert r.Reverse.__pydantic_complete__ and loader._plugins is None\n"
            "print(os.environ.get('PYDANTIC_DISABLE_PLUGINS'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT),
                              "PYDANTIC_DISABLE_PLUGINS": "mine"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mine"
