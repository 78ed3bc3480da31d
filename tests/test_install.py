"""scripts/install as a new user runs it: with Debian's own Python (externally managed, PEP 668)
and a fresh HOME, or inside an active venv. The command it names serves a page, and nothing is
written into the system's site-packages. And the wheel itself: built from the checkout and
installed into a fresh venv, it carries its shipped profiles, the country database and both
licences, and finds them from any working directory.

Invariants checked: the install is a copy in a venv (never editable, never the checkout), the
command is where the script says, the system's site-packages are unchanged, and an installed
wheel needs nothing of the checkout.

scripts/test runs these tests in a network namespace where pip reaches no index, so it gathers
the wheels they need beforehand (with /usr/bin/python3, so they fit it) and names the directory
in ANONPROXY_TEST_WHEELS; pip then installs from those alone. Run by hand without it, pip uses
its own configured index."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from helpers import c_build_possible, curl

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")



def _system_python_too_old() -> bool:
    code = "import sys; print(sys.version_info >= (3, 11))"
    return subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() != "True"


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3 (a Debian Python) here"),
    pytest.mark.skipif(SYSTEM_PYTHON.exists() and _system_python_too_old(),
                       reason="/usr/bin/python3 is older than 3.11, which anonproxy needs"),
]


def system_env(home: Path, path: str = "/usr/bin:/bin:/usr/sbin:/sbin") -> dict[str, str]:
    """The environment of a user of /usr/bin/python3: no venv, no PYTHONPATH, a fresh HOME (and
    no XDG directories elsewhere)."""
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHON"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("XDG_")}
    if wheels := os.environ.get("ANONPROXY_TEST_WHEELS"):
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels}
    return env | {"HOME": str(home), "PATH": path}


def run_install(env: dict[str, str], cwd: Path, checkout: Path = ROOT) -> str:
    done = subprocess.run([str(checkout / "scripts" / "install")], env=env, cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scripts/install failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def named_command(output: str) -> Path:
    lines = [line for line in output.splitlines() if line.startswith("The anonproxy command is ")]
    assert len(lines) == 1, output
    return Path(lines[0].removeprefix("The anonproxy command is "))


def site_packages_listing() -> dict[str, tuple[int, int]]:
    """Every file under the system Python's site-packages, with its size and mtime; compiled
    bytecode (__pycache__, written by any import) left out."""
    code = "import site; print('\\n'.join(site.getsitepackages()))"
    dirs = subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", code], capture_output=True,
                          text=True, check=True).stdout.split()
    listing = {}
    for top in dirs:
        for folder, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            for name in [*files, *subdirs]:
                st = os.lstat(path := os.path.join(folder, name))
                listing[path] = (st.st_size, st.st_mtime_ns)
    assert dirs, "the system Python names no site-packages"
    return listing


def installed_module(python: Path, cwd: Path) -> Path:
    code = "import anonproxy; print(anonproxy.__file__)"
    return Path(subprocess.run([str(python), "-I", "-c", code], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip())


def serve_one_page(program: Path, env: dict[str, str], origin, tmp_path: Path) -> None:
    """Start `program serve` on the direct profile, fetch a page through it with curl, stop it."""
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(program), "serve", "--profile", "direct", "--listen", "127.0.0.1:0",
             "--admin", "off"],
            stdout=subprocess.PIPE, stderr=log, env=env, cwd=tmp_path, text=True)
    try:
        deadline, line = time.monotonic() + 30, ""
        while time.monotonic() < deadline and process.poll() is None:
            if (line := process.stdout.readline()).startswith("anonproxy listening on "):
                break
        assert line.startswith("anonproxy listening on "), log_path.read_text()
        address = line.rsplit(" ", 1)[1].strip()
        out = curl("-x", f"http://{address}", origin.url("/echo?installed"))
        assert out.returncode == 0, out.stderr
        assert origin.last.target == "/echo?installed"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_install_on_the_system_python_with_a_fresh_home_serves_a_page(tmp_path, origin):
    home = tmp_path / "home"
    home.mkdir()
    env = system_env(home)
    before = site_packages_listing()

    output = run_install(env, tmp_path)
    program = named_command(output)
    venv = home / ".local" / "share" / "anonproxy-venv"
    assert program == home / ".local" / "bin" / "anonproxy"
    assert program.resolve() == (venv / "bin" / "anonproxy").resolve()
    assert f'export PATH="{home}/.local/bin:$PATH"' in output  # not on PATH: says how
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    module = installed_module(venv / "bin" / "python", tmp_path)
    assert module.is_relative_to(venv / "lib"), f"not a copy in the venv: {module}"
    if c_build_possible(str(SYSTEM_PYTHON)):
        assert "Its hot path is compiled (mypyc)." in output.splitlines()
    serve_one_page(program, env, origin, tmp_path)

    again = run_install(env, tmp_path)  # re-running upgrades in place
    assert named_command(again) == program
    serve_one_page(program, env, origin, tmp_path)

    assert site_packages_listing() == before
    user_site = home / ".local" / "lib"
    assert not user_site.exists(), "wrote into the user's site-packages"


def test_install_inside_an_active_venv_installs_into_that_venv(tmp_path, origin):
    home = tmp_path / "home"
    home.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
    env = system_env(home, f"{venv}/bin:/usr/bin:/bin:/usr/sbin:/sbin") | {"VIRTUAL_ENV": str(venv)}
    before = site_packages_listing()

    output = run_install(env, tmp_path)
    assert named_command(output) == venv / "bin" / "anonproxy"
    assert "PATH" not in output  # the venv's bin is on PATH already
    assert not (home / ".local").exists(), "wrote outside the active venv"
    assert installed_module(venv / "bin" / "python", tmp_path).is_relative_to(venv / "lib")
    serve_one_page(venv / "bin" / "anonproxy", env, origin, tmp_path)
    assert site_packages_listing() == before


def test_install_ships_nothing_an_earlier_build_left_behind(tmp_path):
    """setuptools builds in the source tree and packs whatever build/lib holds, so a module an
    earlier build left there (since moved or deleted) would be installed with the rest."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    leftover = checkout / "build" / "lib" / "anonproxy" / "leftover_of_an_earlier_build.py"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("")
    venv = tmp_path / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
    env = system_env(tmp_path, f"{venv}/bin:/usr/bin:/bin:/usr/sbin:/sbin") | {"VIRTUAL_ENV": str(venv)}

    run_install(env, tmp_path, checkout)
    package = installed_module(venv / "bin" / "python", tmp_path).parent
    assert (package / "__main__.py").exists()
    assert not (package / leftover.name).exists()


def build_wheel(tmp_path: Path, env_extra: dict[str, str] | None = None
                ) -> tuple[Path, list[str], dict[str, str], Path]:
    """A wheel built from a copy of the checkout with a fresh venv of the system Python: the
    wheel, that venv's pip, its environment and an unrelated working directory."""
    source = tmp_path / "source"  # setuptools builds in the source tree: a copy of it
    shutil.copytree(ROOT / "anonproxy", source / "anonproxy",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "native.txt"))
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    venv, wheels, elsewhere = tmp_path / "venv", tmp_path / "wheels", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
    env = system_env(tmp_path, f"{venv}/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--use-pep517", "--wheel-dir",
                            str(wheels), str(source)], env=env | (env_extra or {}),
                           cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("anonproxy-*.whl")
    return wheel, pip, env, elsewhere


def hot_path(venv: Path, cwd: Path) -> str:
    code = "import anonproxy.native as n; print(n.describe())"
    return subprocess.run([str(venv / "bin" / "python"), "-I", "-c", code], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_wheel_installed_elsewhere_finds_its_profiles_and_database(tmp_path):
    """The shipped profiles and the country database are package data found through
    importlib.resources: a wheel built from the checkout, installed into a fresh venv, checks
    each shipped profile and opens the bundled database from an unrelated working directory,
    with the checkout nowhere on its path. Built where gcc and the headers are, its hot path
    is compiled, and runs so installed."""
    wheel, pip, env, elsewhere = build_wheel(tmp_path)
    venv = tmp_path / "venv"

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
    assert {"anonproxy/profiles/default.toml", "anonproxy/profiles/direct.toml",
            "anonproxy/data/country.mmdb", "anonproxy/data/README",
            "anonproxy/data/LICENSE"} <= names
    licences = info.removesuffix("METADATA") + "licenses/"
    assert {licences + "LICENSE", licences + "anonproxy/data/LICENSE"} <= names
    assert "License-Expression: MIT AND CC-BY-SA-4.0" in metadata.splitlines()
    compiled = c_build_possible(str(SYSTEM_PYTHON))
    if compiled:
        assert "anonproxy/native.txt" in names
        assert any(n.startswith("anonproxy/wire/http1.") and n.endswith(".so") for n in names)

    installed = subprocess.run([*pip, "install", str(wheel)], env=env, cwd=elsewhere,
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    package = installed_module(venv / "bin" / "python", elsewhere).parent
    assert package.is_relative_to(venv / "lib"), package
    program = str(venv / "bin" / "anonproxy")
    for name in ("default", "direct"):
        out = subprocess.run([program, "check", name], env=env, cwd=elsewhere,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"profile {name} ({package / 'profiles' / f'{name}.toml'})" in out.stdout
    out = subprocess.run([program, "geoip", "info"], env=env, cwd=elsewhere,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"path         {package / 'data' / 'country.mmdb'}" in out.stdout.splitlines()
    if compiled:
        assert hot_path(venv, elsewhere) == "compiled (mypyc)"


def test_a_wheel_built_without_a_c_compiler_installs_as_pure_python(tmp_path):
    """No compiler (CC names one that fails): the build says so and carries on, and the wheel
    is pure Python that runs, with nothing compiled in it."""
    wheel, pip, env, elsewhere = build_wheel(tmp_path, {"CC": "/bin/false"})
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert not [n for n in names if n.endswith(".so")], names
    assert "anonproxy/native.txt" not in names
    installed = subprocess.run([*pip, "install", str(wheel)], env=env, cwd=elsewhere,
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    venv = tmp_path / "venv"
    assert hot_path(venv, elsewhere).startswith("interpreted: not compiled")
    out = subprocess.run([str(venv / "bin" / "anonproxy"), "check", "direct"], env=env,
                         cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
