"""What needs Linux says so elsewhere: `exec --strict` (namespaces, seccomp, /proc) and several
worker processes (SO_REUSEPORT spreading connections, prctl) end with one sentence naming the
feature and Linux, exit status 2 and no traceback, before anything is started; splice, an
optimisation, falls back to the relay's protocols without a word.

In-process, with sys.platform set to another system's name; the modules a command imports are
imported first, as they are on this system, so that none of them sees the other name."""

from __future__ import annotations

import asyncio
import sys

import pytest

import anonproxy.cli.confine
import anonproxy.cli.serve
import anonproxy.cli.wrap
import anonproxy.runtime.server  # what serve imports after its checks, imported here first
from anonproxy.cli.main import main
from anonproxy.runtime import workers
from anonproxy.transport import splice
from anonproxy.wire.address import Address

DIRECT = 'default = "direct"\n[exits.direct]\n'


@pytest.fixture(params=["darwin", "freebsd14", "win32"])
def elsewhere(request, monkeypatch):
    monkeypatch.setattr(sys, "platform", request.param)
    return request.param


def one_sentence(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_exec_strict_says_it_needs_linux_and_runs_nothing(elsewhere, tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text(DIRECT)
    ran = tmp_path / "ran"
    code = main(["exec", "--profile", str(profile), "--strict", "--", "touch", str(ran)])
    out = capsys.readouterr()
    assert code == 2
    assert one_sentence(out.err) == (
        "anonproxy: exec --strict: confining a program needs Linux (namespaces, seccomp), and "
        f"this system is {elsewhere}")
    assert out.out == ""
    assert not ran.exists()


def test_exec_strict_says_so_before_reading_the_profile(elsewhere, tmp_path, capsys):
    assert main(["exec", "--profile", str(tmp_path / "missing.toml"), "--strict", "--", "true"]) == 2
    assert "needs Linux" in one_sentence(capsys.readouterr().err)


def test_the_strict_jail_refuses_too(elsewhere):
    with pytest.raises(anonproxy.cli.wrap.StrictUnavailable, match="needs Linux"):
        anonproxy.cli.wrap._Jail([])


def test_the_confinement_program_refuses_without_a_traceback(elsewhere, capsys, tmp_path):
    # (a missing directory: were the check gone, `run` would stop at chdir, never exec)
    assert anonproxy.cli.confine.main(["run", str(tmp_path / "missing"), "--", "true"]) == 2
    assert one_sentence(capsys.readouterr().err).startswith(
        "anonproxy: exec --strict: confining a program needs Linux")


def test_serve_workers_option_says_it_needs_linux(elsewhere, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    profile = tmp_path / "p.toml"
    profile.write_text(DIRECT)
    code = main(["serve", "--profile", str(profile), "--workers", "2", "--listen", "127.0.0.1:0",
                 "--admin", "off"])
    out = capsys.readouterr()
    assert code == 2
    assert one_sentence(out.err) == (
        "anonproxy: --workers 2: several worker processes need Linux (SO_REUSEPORT spreading "
        f"connections, prctl), and this system is {elsewhere}")
    assert out.out == ""
    assert not (tmp_path / "run").exists()  # nothing written: it stopped first


def test_serve_workers_key_names_the_profile_file(elsewhere, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    profile = tmp_path / "p.toml"
    profile.write_text("workers = 3\n" + DIRECT)
    assert main(["serve", "--profile", str(profile), "--listen", "127.0.0.1:0"]) == 2
    assert one_sentence(capsys.readouterr().err).startswith(
        f"anonproxy: {profile}: workers = 3: several worker processes need Linux")


def test_one_worker_needs_nothing_of_linux(elsewhere, tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(DIRECT)
    loaded = anonproxy.cli.serve.load_profile(str(profile))
    assert anonproxy.cli.serve._workers(loaded, None) == (1, f"{profile}: workers = 1")


def test_a_reuseport_socket_is_refused(elsewhere):
    with pytest.raises(workers.WorkersUnavailable, match=f"need Linux .*this system is {elsewhere}"):
        workers.reuseport_socket(Address("127.0.0.1", 0))


async def test_without_splice_a_tunnel_stays_on_the_protocols_silently(monkeypatch, capsys):
    """No os.splice (any system but Linux): `spliceable` answers False, and the relay keeps
    the direction on its protocols; nothing is said."""
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        assert splice.spliceable(writer.transport) is splice.AVAILABLE
        monkeypatch.setattr(splice, "AVAILABLE", False)
        assert splice.spliceable(writer.transport) is False
        writer.close()
        await writer.wait_closed()
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert capsys.readouterr() == ("", "")
