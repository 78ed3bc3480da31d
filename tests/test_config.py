"""Profiles: loading, defaults and error messages that name file, key and value."""

from __future__ import annotations

import pytest

from anonproxy.config import ProfileError, load_profile


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
    ('default = "nowhere"\n[exits.direct]\n', "default exit 'nowhere' is not defined"),
    ('[exits.direct]\nsource = "not-an-ip"\n', 'exits.direct.source = "not-an-ip"'),
    ('[exits.direct]\nvia = ["socks5://x:1"]\n', "exits.direct.via: unknown key"),
    ('listen = "127.0.0.1:99999"\n', 'listen = "127.0.0.1:99999": port'),
    ('listen = "0.0.0.0:8118"\n', "add allow"),
    ('[headers]\nreferer = "sometimes"\n', 'headers.referer = "sometimes"'),
    ('[headers]\nuser_agent = "fake"\n', 'headers.user_agent = "fake"'),
    ('[limits]\nheader_timeout = -1\n', "limits.header_timeout = -1"),
    ('lisen = "127.0.0.1:1"\n', "lisen: unknown key"),
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


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match="no profile named 'nope' .*default"):
        load_profile("nope")


def test_non_loopback_listen_with_allow_list_is_accepted(tmp_path):
    loaded = load_profile(write(tmp_path, 'listen = "0.0.0.0:8118"\nallow = ["10.0.0.0/8"]\n'))
    assert str(loaded.profile.allow[0]) == "10.0.0.0/8"
