"""Profiles: loading, defaults and error messages that name file, key and value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from anonproxy.config.profiles import ProfileError, load_profile


def write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_shipped_profiles_load():
    for name in ("default", "direct"):
        loaded = load_profile(name)
        assert loaded.profile.listen == "127.0.0.1:8118"
        assert loaded.profile.default in loaded.profile.exits


@pytest.mark.parametrize("text, expected", [
    ('default = "nowhere"\n[exits.direct]\n', 'default = "nowhere": no exit by that name'),
    ('[exits.direct]\nsource = "not-an-ip"\n', 'exits.direct.source = "not-an-ip"'),
    ('[exits.direct]\nvias = ["socks5://x:1"]\n', "exits.direct.vias: unknown key"),
    ('[exits.direct]\n[exits.old]\nvia = ["socks4://127.0.0.1:1080"]\n',
     'exits.old.via[1] = "socks4://127.0.0.1:1080": SOCKS4 hops are refused'),
    ('[exits.direct]\n[exits.x]\nvia = ["ftp://127.0.0.1:21"]\n', "exits.x.via[1] = \"ftp://127.0.0.1:21\": scheme 'ftp'"),
    ('[exits.direct]\n[exits.x]\nvia = ["socks5://127.0.0.1"]\n', "write it as scheme://"),
    ('[exits.direct]\n[exits.p]\npool = ["direct", "ghost"]\n', 'exits.p.pool[2] = "ghost": no exit by that name'),
    ('[exits.direct]\n[exits.a]\npool = ["b"]\n[exits.b]\npool = ["a"]\n', "cycle: a -> b -> a"),
    ('[exits.direct]\n[exits.a]\nvia = ["socks5://127.0.0.1:1"]\npool = ["direct"]\n', "one of via, pool or tor"),
    ('[exits.direct]\n[exits.a]\nsource = "127.0.0.1"\nvia = ["socks5://127.0.0.1:1"]\n', "source applies"),
    ('[exits.direct]\n[exits.a]\nvia = ["socks5://127.0.0.1:1"]\nstrategy = "sticky"\n', "pools only"),
    ('[exits.direct]\n[[rules]]\nexit = "direct"\n', "at least one of domains"),
    ('[exits.direct]\n[[rules]]\ndomains = ["a.*.com"]\nexit = "direct"\n', "rules[1].domains"),
    ('[exits.direct]\n[[rules]]\ndomains = ["re:("]\nexit = "direct"\n', "not a valid regular expression"),
    ('[exits.direct]\n[[rules]]\ncidrs = ["10.0.0.0/33"]\nexit = "direct"\n', 'rules[1].cidrs[1] = "10.0.0.0/33"'),
    ('[exits.direct]\n[[rules]]\nports = [0]\nexit = "direct"\n', "rules[1].ports[1] = 0"),
    ('[exits.direct]\n[[rules]]\ncountries = ["GBR"]\nexit = "direct"\n', 'rules[1].countries[1] = "GBR"'),
    ('[exits.direct]\n[[rules]]\nports = [80]\nexit = "nowhere"\n', 'rules[1].exit = "nowhere"'),
    (('[exits.direct]\n[[rules]]\ndomains = ["a.com"]\nexit = "direct"\n[[rules]]\n'
      'countries = ["DE", "UK"]\nexit = "direct"\n'),
     'rules[2].countries[2] = "UK": \'UK\' is not an ISO 3166-1 country code: write "GB"'),
    ('[exits.direct]\n[[rules]]\ncountries = ["XX"]\nexit = "direct"\n',
     'rules[1].countries[1] = "XX": \'XX\' is not an ISO 3166-1 alpha-2 country code'),
    ('[exits.direct]\n[exits.t]\ntor = { countries = ["de", "el"] }\n',
     'exits.t.tor.countries[2] = "el": \'el\' is not an ISO 3166-1 country code: write "GR"'),
    ('[exits.direct]\n[exits.uk]\nvia = ["socks5://127.0.0.1:1"]\ncountry = "UK"\n',
     'exits.uk.country = "UK"'),
    ('[exits.direct]\n[exits.block]\n', "reserved"),
    ('resolve = "sometimes"\n', 'resolve = "sometimes"'),
    ('workers = 2\n[exits.direct]\n[exits.t]\ntor = { control = "managed" }\n',
     "workers = 2: a managed tor exit would start one tor per worker"),
    ('workers = 0\n', "workers = 0: Input should be greater than or equal to 1"),
    ('admin = "0.0.0.0:8119"\n', 'admin.listen = "0.0.0.0:8119": a dashboard beyond loopback'),
    ('admin = "127.0.0.1:8118"\n', 'admin.listen = "127.0.0.1:8118": the same address as listen'),
    ('admin = 5\n', 'admin = 5: write it as "HOST:PORT"'),
    ('admin = { listen = "127.0.0.1:8119", password = "short" }\n', "admin.password"),
    ('listen = "127.0.0.1:99999"\n', 'listen = "127.0.0.1:99999": the port is outside 0-65535'),
    ('listen = "0.0.0.0:8118"\n', "add allow"),
    ('[headers]\nreferer = "sometimes"\n', 'headers.referer = "sometimes"'),
    ('[headers]\nuser_agent = "fake"\n', 'headers.user_agent = "fake"'),
    ('[limits]\nheader_timeout = -1\n', "limits.header_timeout = -1"),
    ('lisen = "127.0.0.1:1"\n', "lisen: unknown key"),
    ('[verify]\necho = ["ftp://x/"]\n', 'verify.echo[1] = "ftp://x/"'),
    ('[verify]\necho = "http://x/"\n', 'verify.echo = "http://x/"'),
    ('[verify]\ninterval = 1\n', "verify.interval = 1"),
    ('[verify]\nenforce = "yes"\n', 'verify.enforce = "yes"'),
    ('[verify]\nechos = []\n', "verify.echos: unknown key"),
    ('listen = \n', "not valid TOML"),
])
def test_broken_profiles_name_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert message.startswith(path + ":")
    assert expected in message
    assert "Traceback" not in message and "pydantic" not in message


def test_verify_defaults_and_echo_urls(tmp_path):
    loaded = load_profile(write(tmp_path, ""))
    assert (loaded.profile.verify.echo, loaded.profile.verify.interval,
            loaded.profile.verify.enforce) == ([], 600.0, False)
    loaded = load_profile(write(tmp_path, '[verify]\necho = ["http://127.0.0.1:1/ip"]\n'
                                          'interval = 60\nenforce = true\n'))
    assert loaded.profile.verify.echo == ["http://127.0.0.1:1/ip"]
    assert loaded.profile.verify.enforce is True


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match=r"no profile named 'nope' .*default"):
        load_profile("nope")


def test_non_loopback_listen_with_allow_list_is_accepted(tmp_path):
    loaded = load_profile(write(tmp_path, 'listen = "0.0.0.0:8118"\nallow = ["10.0.0.0/8"]\n'))
    assert str(loaded.profile.allow[0]) == "10.0.0.0/8"


def test_listens_on_loopback_by_default_and_never_beyond_without_an_allow_list(tmp_path):
    from anonproxy.wire.address import is_loopback_host

    assert is_loopback_host(load_profile(write(tmp_path, "")).profile.listen_address.host)
    for listen in ("0.0.0.0:8118", "[::]:8118", "192.0.2.1:8118"):
        with pytest.raises(ProfileError, match="exposes the proxy beyond this machine"):
            load_profile(write(tmp_path, f'listen = "{listen}"\n'))


def test_a_profile_using_tor_without_a_tor_program_says_what_to_do(monkeypatch):
    import anonproxy.exits.tor_datadir as datadir
    import anonproxy.exits.tor_process as tor
    from anonproxy.config.profiles import load_profile as load
    from anonproxy.runtime.server import ProxyServer

    monkeypatch.setattr(datadir.shutil, "which", lambda name: None)
    monkeypatch.setattr(datadir.os.path, "exists", lambda path: False)
    with pytest.raises(tor.TorUnavailable) as error:
        ProxyServer(load("default"))
    assert "apt-get install tor" in str(error.value) and "--profile direct" in str(error.value)


@pytest.mark.parametrize("text", ['allow = [true]\n', '[exits.direct]\nsource = 5\n'])
def test_addresses_must_be_written_as_strings(tmp_path, text):
    with pytest.raises(ProfileError, match="write it as a string"):
        load_profile(write(tmp_path, 'listen = "127.0.0.1:1"\n' + text))


@pytest.mark.parametrize("setting", [None, "some-plugin"])
def test_profile_models_load_no_pydantic_plugins_and_leave_the_environment_as_it_was(setting):
    # plugins would see every profile validated (credentials included); the lookup happens
    # only when a model class is built, so every model must be complete once imported
    code = (
        "import os, pydantic.plugin._loader as loader, anonproxy.config.models as c\n"
        "models = [v for v in vars(c).values() if isinstance(v, type)"
        " and issubclass(v, c.BaseModel) and v is not c.BaseModel]\n"
        "assert models and all(m.__pydantic_complete__ for m in models), models\n"
        "assert loader._plugins is None, 'entry points were scanned for plugins'\n"
        "print(os.environ.get('PYDANTIC_DISABLE_PLUGINS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(setting)
