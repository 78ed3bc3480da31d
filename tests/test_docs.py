"""The docs' checkable claims, checked: links resolve, the profile example and its commented
alternatives are accepted by `anonproxy check`, the documented error lines are what `check`
prints, every documented command and option exists, and a cut response body is visible to the
client exactly when the docs say it is. Real CLI runs and a real proxy; no mocks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import curl

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anonproxy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], check=False, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def blocks(path: Path, lang: str = "") -> list[str]:
    """The fenced blocks whose opening fence names `lang` (or none, for "")."""
    found, current, opened = [], None, None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == lang:
                    found.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_in_the_docs_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc.name}: {broken}"


def _alternatives(example: str) -> list[tuple[str, str]]:
    """The example as written, and one variant per commented-out `# key = value` line: that
    line uncommented, replacing the key's written line in the same table if there is one, and
    dropping a key its comment says it does not go with ("not with selectable")."""
    lines = example.splitlines()
    variants = [("as written", example)]
    section = ""
    sections = []
    for line in lines:
        if line.startswith("["):
            section = line.split("#")[0].strip()
        sections.append(section)
    for i, line in enumerate(lines):
        m = re.match(r"#\s*(\w+)\s*=", line)
        if not m:
            continue
        key = m.group(1)
        excluded = re.findall(r"not with (\w+)", line)
        new = []
        for j, other in enumerate(lines):
            if j == i:
                new.append(line.lstrip("# "))
            elif (sections[j] == sections[i] and re.match(rf"{key}\s*=", other)) or any(re.match(rf"{x}\s*=", other) for x in excluded):
                continue
            else:
                new.append(other)
        variants.append((key, "\n".join(new) + "\n"))
    return variants


PROFILE_EXAMPLE = blocks(ROOT / "docs" / "profiles.md", "toml")[0]


@pytest.mark.parametrize("name,text", _alternatives(PROFILE_EXAMPLE),
                         ids=[n for n, _ in _alternatives(PROFILE_EXAMPLE)])
def test_every_key_of_the_profile_example_is_accepted_by_check(tmp_path, name, text):
    assert len(_alternatives(PROFILE_EXAMPLE)) >= 4  # admin, auth, fallback alternatives
    (tmp_path / "full.toml").write_text(text)
    for ref in re.findall(r'"([\w-]+\.toml)"', text):  # selectable profiles it names
        (tmp_path / ref).write_text('default = "direct"\n')
    for ref in re.findall(r'"([\w-]+\.txt)"', text):  # block lists it names
        (tmp_path / ref).write_text("||ads.example^\n")
    out = anonproxy("check", "full.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("ok")


def test_the_documented_profile_errors_are_what_check_prints(tmp_path):
    """docs/profiles.md shows a broken mine.toml, the lines check prints, and the line it
    prints once the per-key errors are fixed (cross-key errors wait for those)."""
    doc = ROOT / "docs" / "profiles.md"
    broken = next(b for b in blocks(doc, "toml") if "socks4://" in b)
    first, second = [b for b in blocks(doc) if b.startswith("anonproxy: mine.toml")]
    (tmp_path / "mine.toml").write_text(broken)
    out = anonproxy("check", "mine.toml", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr == first
    fixed = broken.replace('"nope"', '"192.0.2.10"').replace("socks4://", "socks5://")
    (tmp_path / "mine.toml").write_text(fixed)
    out = anonproxy("check", "mine.toml", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr == second


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(command words, options) for each `anonproxy ...` synopsis in docs/cli.md."""
    text = blocks(ROOT / "docs" / "cli.md")[0]
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("anonproxy "):
            words = [w for w in line.split()[1:3] if re.fullmatch(r"[a-z]+", w)]
            found.append((" ".join(words), []))
        elif found and line.startswith("                "):  # a synopsis' continuation
            pass
        else:
            continue
        found[-1][1].extend(re.findall(r"\[(-{1,2}[\w-]+)", line))
        found[-1][1].extend(re.findall(r"\|(--[\w-]+)", line))
    return found


@pytest.mark.parametrize("command,options", _documented_commands(),
                         ids=[c for c, _ in _documented_commands()])
def test_every_documented_command_and_option_exists(command, options):
    top = anonproxy("--help").stdout
    assert re.search(rf"^\s+{command.split()[0]}\b", top, re.MULTILINE), command
    help_text = anonproxy(*command.split(), "--help")
    assert help_text.returncode == 0, help_text.stderr
    missing = [o for o in options if o not in help_text.stdout]
    assert not missing, (command, missing)


def test_every_command_of_the_cli_is_documented():
    top = anonproxy("--help").stdout
    listed = set(re.findall(r"^    (\w+)", top, re.MULTILINE))
    documented = {c.split()[0] for c, _ in _documented_commands()}
    assert listed and listed <= documented, listed - documented


def _documented_scripts() -> dict[str, set[str]]:
    """{script: options} from the `scripts/...` command lines in docs/benchmarks.md."""
    found: dict[str, set[str]] = {}
    for block in blocks(ROOT / "docs" / "benchmarks.md", "sh"):
        for line in block.splitlines():
            if line.startswith("scripts/"):
                command = line.split("#")[0]
                found.setdefault(command.split()[0], set()).update(
                    re.findall(r"(?<!\S)(--[\w-]+)", command))
    return found


@pytest.mark.parametrize("script,options", sorted(_documented_scripts().items()),
                         ids=sorted(_documented_scripts()))
def test_every_documented_benchmark_command_and_option_exists(script, options):
    """docs/benchmarks.md's commands run as written: the script is there and its --help (which
    argparse prints before the script installs or starts anything) lists each option used."""
    assert (ROOT / script).is_file(), script
    help_text = subprocess.run([sys.executable, str(ROOT / script), "--help"], check=False,
                               capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0, help_text.stderr
    listed = set(re.findall(r"(?<![\w-])(--[\w-]+)", help_text.stdout))
    missing = sorted(options - listed)
    assert not missing, (script, missing)


@pytest.mark.parametrize("framing,head,visible", [
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", True),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", True),
    ("close-delimited", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", False),
])
def test_a_cut_body_is_visible_to_the_client_unless_close_delimited(start_proxy, raw, framing,
                                                                    head, visible):
    """What docs/connections.md says under Truncation: an upstream closing cleanly mid-body
    reaches the client as an error for a framed body, as a clean end for a close-delimited
    one (which no client can tell from a complete body)."""
    proxy = start_proxy()
    path = raw.script(framing, head + b"x" * 100, "close")
    out = curl("-s", "-o", "/dev/null", "-w", "%{size_download}", "-x", proxy.url, raw.url(path))
    assert out.stdout == b"100"
    assert (out.returncode != 0) == visible, (framing, out.returncode)
