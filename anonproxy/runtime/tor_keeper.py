"""`python -m anonproxy.runtime.tor_keeper DATA KEEP`: keep a managed tor for fetch and exec.

fetch and exec are short-lived; a tor takes seconds to tens of seconds to bootstrap. When one
of them needs a managed tor and none runs for its settings, it starts this keeper (in a session
of its own) and uses the keeper's tor like any shared one. The keeper holds the data
directory's owner lock (exits/tor_datadir.py), starts tor with itself as the owning process
(tor exits if the keeper dies), writes tor's output to `tor.log`, and stops tor once no process
has said it uses it (tor_datadir.mark_used) for KEEP seconds. A second keeper for the same
directory finds the lock held and exits at once.

Invariants: one tor per data directory; the keeper never outlives its tor (it exits when tor
does); it has no terminal and reads nothing from anyone; SIGTERM or SIGINT stop tor and it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from anonproxy.exits import tor_datadir
from anonproxy.exits.tor_datadir import TorUnavailable, tor_binary

CHECK_EVERY = 5.0  # seconds between looks at the last use


def keep(data: Path, seconds: float) -> int:
    lock = tor_datadir.OwnerLock(data)
    if not lock.take():
        return 0  # another process owns (or is starting) the tor of this directory
    (data / tor_datadir.CONTROL_PORT).unlink(missing_ok=True)
    with open(data / tor_datadir.LOG, "wb") as log:
        try:
            binary = tor_binary()
        except TorUnavailable as error:
            log.write(f"[err] {error}\n".encode())
            return 1
        tor = subprocess.Popen(tor_datadir.tor_command(binary, data, os.getpid()),
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    stop = lambda *_: tor.terminate()  # noqa: E731 - a signal handler
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tor_datadir.mark_used(data)  # (the caller is about to use it)
    while True:
        try:
            tor.wait(timeout=min(CHECK_EVERY, seconds))
            break  # tor exited
        except subprocess.TimeoutExpired:
            pass
        if time.time() - tor_datadir.last_used(data) > seconds:
            tor.terminate()
    try:
        tor.wait(timeout=10)
    except subprocess.TimeoutExpired:
        tor.kill()
        tor.wait()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m anonproxy.runtime.tor_keeper DATA_DIR KEEP_SECONDS",
              file=sys.stderr)
        return 2
    return keep(Path(argv[0]), float(argv[1]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
