"""Block lists end to end: the real proxy with EasyList, EasyPrivacy and small lists of our own,
curl and raw sockets as clients, a recording origin on loopback.

Names the lists block are never looked up: the lists answer before any rule or exit, so a
blocked ad server's name never reaches a resolver; what the lists let through goes to the
origin on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import curl, recv_until, socks_connect, wait_until

ROOT = Path(__file__).resolve().parents[1]
EASYLIST_DIR = Path("/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist")

MINE = """\
! Title: mine
||127.0.0.1^*/blocked/
@@||127.0.0.1^*/blocked/ok
||127.0.0.1^*/tp/$third-party
||127.0.0.1^*/typed/$image
||127.0.0.1^*/never$popup
||127.0.0.1^*/typo/$scirpt
127.0.0.1##.ad
"""
HOSTS = """\
# hosts
127.0.0.1 localhost
0.0.0.0 ads.hosts.test tracker.hosts.test
this-line is wrong
"""


def _easylists() -> list[str]:
    if not (EASYLIST_DIR / "easylist.txt").is_file():
        pytest.skip("webext-ublock-origin-chromium is not installed (scripts/test installs it)")
    return [str(EASYLIST_DIR / "easylist.txt"), str(EASYLIST_DIR / "easyprivacy.txt")]


def _listed_profile(tmp_path: Path) -> str:
    (tmp_path / "mine.txt").write_text(MINE)
    (tmp_path / "hosts.txt").write_text(HOSTS)
    lists = ", ".join(f'"{name}"' for name in [*_easylists(), "mine.txt", "hosts.txt"])
    return f'blocklists = [{lists}]\ndefault = "direct"\n[exits.direct]\n'


@pytest.fixture
def listed(start_proxy, tmp_path):
    return start_proxy(_listed_profile(tmp_path), name="lists")


@pytest.fixture
def listed_process(start_proxy_process, tmp_path):
    """As `listed`, as an `anonproxy serve` process (for signals)."""
    return start_proxy_process(_listed_profile(tmp_path), name="lists")


def _get(proxy, url: str, *args: str) -> tuple[int, str]:
    out = curl("-x", proxy.url, "-w", "\n%{http_code}", *args, url)
    body, _, code = out.stdout.decode().rpartition("\n")
    return int(code), body


def test_a_blocked_plain_http_request_gets_403_naming_the_list_and_rule(listed, origin):
    code, body = _get(listed, origin.url("/blocked/x.js"))
    assert code == 403
    assert body == (f"127.0.0.1:{origin.port} is blocked by the block list mine.txt "
                    "(rule: ||127.0.0.1^*/blocked/).\n")
    assert not origin.received
    log = listed.wait_log("blocked by mine.txt")
    assert "/blocked/" not in log.split("rule:")[0]  # the log names host and rule, not the path


def test_easylist_and_easyprivacy_block_real_ad_and_tracker_urls_for_curl(listed):
    code, body = _get(listed, "http://ad.doubleclick.net/ddm/adj/N1/x.js")
    assert code == 403 and "easylist.txt (rule: ||ad.doubleclick.net^)" in body
    code, body = _get(listed, "http://www.google-analytics.com/analytics.js",
                      "-H", "Referer: http://www.news.example/")
    assert code == 403 and "the block list easyprivacy.txt" in body
    # blocked before any exit: the names were never looked up (the proxy says why, not DNS)
    assert "cannot resolve" not in listed.log()


def _reached(proxy, origin, path: str, *args: str) -> bool:
    """Whether the request went through (the origin answers 404 to these paths) or was
    blocked (403)."""
    code, _ = _get(proxy, origin.url(path), *args)
    assert code in (403, 404), code
    return code == 404 and origin.last.target == path


def test_exceptions_win(listed, origin):
    assert _reached(listed, origin, "/blocked/ok")


def test_third_party_and_type_options_follow_the_headers(listed, origin):
    page = origin.url("/page.html")
    assert _reached(listed, origin, "/tp/a.js", "-H", f"Referer: {page}")
    assert not _reached(listed, origin, "/tp/a.js", "-H", "Referer: http://news.example/")
    assert not _reached(listed, origin, "/typed/x", "-H", "Accept: image/webp,*/*")
    assert _reached(listed, origin, "/typed/x.js", "-H", "Accept: */*")
    assert not _reached(listed, origin, "/typed/x.png", "-H", "Accept: */*")
    assert not _reached(listed, origin, "/typed/x", "-H", "Sec-Fetch-Dest: image",
                        "-H", "Accept: */*")


def test_hosts_files_block_hosts_and_their_subdomains(listed):
    code, body = _get(listed, "http://cdn.ads.hosts.test/x")
    assert code == 403 and "the block list hosts.txt (rule: ads.hosts.test)" in body


def test_a_blocked_connect_gets_403(listed):
    with listed.connect() as sock:
        sock.sendall(b"CONNECT ad.doubleclick.net:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = recv_until(sock, b"\n.\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"easylist.txt (rule: ||ad.doubleclick.net^)" in answer
    out = curl("-p", "-x", listed.url, "https://tracker.hosts.test/", "-o", "/dev/null",
               "-w", "%{http_connect}")
    assert out.stdout == b"403"


def test_a_blocked_socks5_request_gets_reply_2(listed):
    with listed.connect() as sock:
        name = b"tracker.hosts.test"
        reply = socks_connect(sock, 3, bytes([len(name)]) + name, 443)
    assert reply[:2] == b"\x05\x02"
    assert "socks5 tracker.hosts.test:443 exit=- status=2" in listed.wait_log("status=2")


def test_a_reload_picks_up_a_changed_list(listed_process, origin, tmp_path):
    listed = listed_process
    assert _reached(listed, origin, "/fresh/x")
    (tmp_path / "mine.txt").write_text(MINE + "||127.0.0.1^*/fresh/\n")
    listed.process.send_signal(signal.SIGHUP)
    listed.wait_log("reloaded profile lists")
    code, body = _get(listed, origin.url("/fresh/x"))
    assert code == 403 and "(rule: ||127.0.0.1^*/fresh/)" in body


def test_a_list_that_vanishes_on_reload_keeps_the_running_lists(listed_process, tmp_path):
    listed = listed_process
    (tmp_path / "hosts.txt").unlink()
    listed.process.send_signal(signal.SIGHUP)
    log = listed.wait_log("reload failed")
    assert 'blocklists[4] = "hosts.txt": no such file' in log
    assert _get(listed, "http://ads.hosts.test/")[0] == 403


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60, env={**(env or os.environ), "PYTHONPATH": str(ROOT)})


def _profile(tmp_path: Path) -> Path:
    (tmp_path / "mine.txt").write_text(MINE)
    (tmp_path / "hosts.txt").write_text(HOSTS)
    profile = tmp_path / "p.toml"
    lists = ", ".join(f'"{name}"' for name in [*_easylists(), "mine.txt", "hosts.txt"])
    profile.write_text(f'blocklists = [{lists}]\n[exits.direct]\n')
    return profile


def test_route_names_the_list_and_rule_or_says_not_blocked(tmp_path):
    profile = _profile(tmp_path)
    out = _cli("route", "--profile", str(profile), "http://ad.doubleclick.net/x.js")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:2] == [
        "destination  ad.doubleclick.net:80",
        "blocklist    blocked by " + str(EASYLIST_DIR / "easylist.txt") + ": ||ad.doubleclick.net^"]
    out = _cli("route", "--profile", str(profile), "tracker.hosts.test:443")
    assert "blocklist    blocked by hosts.txt: tracker.hosts.test" in out.stdout
    assert "matched by host, as a CONNECT or SOCKS5 tunnel" in out.stdout
    out = _cli("route", "--profile", str(profile), "http://127.0.0.1:8080/blocked/ok")
    lines = out.stdout.splitlines()
    assert lines[1].startswith("blocklist    not blocked (")
    assert lines[2] == "             an exception let it through: mine.txt: @@||127.0.0.1^*/blocked/ok"
    assert lines[3].startswith("rule ")  # and then the rules decide, as without lists


def test_check_prints_rules_loaded_and_lines_not_understood(tmp_path):
    out = _cli("check", str(_profile(tmp_path)))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert ("  blocklist mine.txt: Adblock Plus list, 4 rules loaded, 1 cosmetic rules "
            "skipped, 2 lines not understood") in text
    assert "           line 6: ||127.0.0.1^*/never$popup: option 'popup' is not supported" in text
    assert "           line 7: ||127.0.0.1^*/typo/$scirpt: option 'scirpt' is not supported" in text
    assert ("  blocklist hosts.txt: hosts file, 2 rules loaded, 1 entries for this machine "
            "skipped, 1 lines not understood") in text
    assert ("           line 4: this-line is wrong: expected an IP address, then host names"
            in text)
    easylist = next(line for line in text.splitlines() if "easylist.txt: Adblock Plus" in line)
    rules = int(easylist.split(", ")[1].split()[0])
    assert rules > 40000, easylist
    assert text.rstrip().endswith("ok")


def test_the_dashboard_counts_blocks_per_list_and_shows_the_latest(start_proxy_process,
                                                                  tmp_path, origin):
    (tmp_path / "mine.txt").write_text(MINE)
    (tmp_path / "hosts.txt").write_text(HOSTS)
    proxy = start_proxy_process('blocklists = ["mine.txt", "hosts.txt"]\n[exits.direct]\n', name="board")
    for url in (origin.url("/blocked/1"), origin.url("/blocked/2"), "http://ads.hosts.test/",
                origin.url("/blocked/ok")):
        _get(proxy, url)

    def status_with_blocks():
        out = _cli("status", "--listen", f"{proxy.host}:{proxy.port}")
        return out if "blocked by" in out.stdout or "1 blocked" in out.stdout else None

    out = wait_until(status_with_blocks, 10, 0.1) or _cli("status", "--listen",
                                                           f"{proxy.host}:{proxy.port}")
    assert out.returncode == 0, out.stderr
    assert "blocklist    mine.txt (adblock, 6 rules): 2 blocked" in out.stdout, out.stdout
    assert "blocklist    hosts.txt (hosts, 2 rules): 1 blocked" in out.stdout
    latest = [line for line in out.stdout.splitlines() if line.startswith("blocked ")]
    assert latest[0].endswith("ads.hosts.test:80 by hosts.txt: ads.hosts.test")
    assert latest[1].endswith(f"127.0.0.1:{origin.port} by mine.txt: ||127.0.0.1^*/blocked/")
    assert not any("/blocked/1" in line for line in latest)  # sites and rules, never paths


def test_a_blocked_connect_never_reaches_a_resolver_or_the_network(listed):
    """The list answers before routing: a name it blocks is refused without any lookup."""
    with socket.create_connection(listed.address, timeout=5) as sock:
        sock.sendall(b"CONNECT securepubads.g.doubleclick.net:443 HTTP/1.1\r\n\r\n")
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 403")
    # (no timing here: what shows that nothing was looked up is the log's sentence, which
    # names the list, not a failed lookup)
    line = listed.wait_log("securepubads.g.doubleclick.net")
    assert "cannot resolve" not in line and "is blocked by" in line, line[-2000:]
