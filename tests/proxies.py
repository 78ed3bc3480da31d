"""The proxy under test, two ways: in this process (the default) or as `anonproxy serve`.

In-process: the real ProxyServer, built from the profile as `serve` builds it, on an event loop
of its own (uvloop when installed, as the CLI runs it) in a thread of the test process, bound to
real loopback sockets. Its log lines are kept in memory, per proxy, so `log()` and `wait_log()`
read what `serve` would have written to stderr; `stop()` stops it as SIGTERM does (drain, close)
and `problems` lists what must never happen: an error the event loop caught, or a task still
running after the server returned.

As a process: `anonproxy serve` itself, for what only a process has: its command line output,
signals, worker processes, pid files, exit status, descriptors and memory counted from /proc.

Both have the same surface: url, address, log, wait_log, connect, alive, login_url, stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# --- as a process ---------------------------------------------------------------------------

@dataclass
class Proxy:
    """`anonproxy serve` as a child process; its stderr is the log."""

    process: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 5) -> str:
        """The log once it contains `text` (log lines are written just after replies)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return log

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def alive(self) -> bool:
        return self.process.poll() is None

    def login_url(self, timeout: float = 10) -> str:
        """The one-time dashboard login URL `serve` prints after its listening line."""
        lines: list[str] = []  # (the line may already sit in the pipe's buffer: no select)
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        assert lines, "serve printed no login URL after its listening line"
        assert lines[0].startswith("anonproxy dashboard: http://"), lines[0]
        return lines[0].split(": ", 1)[1].strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode

    def kill(self) -> None:
        """Gone at once, as after a crash (teardown: nothing of it is under test any more)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def launch(tmp_path: Path, profile_toml: str, name: str = "test",
           listen: str = "127.0.0.1:0") -> Proxy:
    """Start `anonproxy serve --profile tmp_path/NAME.toml --listen LISTEN`; return once it
    says it listens (RuntimeError with its log when it does not)."""
    profile = tmp_path / f"{name}.toml"
    profile.write_text(profile_toml)
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
             "--listen", listen],
            stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline:  # (readline blocks until serve says something or exits)
        line = process.stdout.readline()
        if line.startswith("anonproxy listening on ") or process.poll() is not None:
            break
    if not line.startswith("anonproxy listening on "):
        process.kill()
        process.wait()
        process.stdout.close()
        raise RuntimeError(f"proxy did not start: {log_path.read_text()}")
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return Proxy(process, host, int(port), log_path)


# --- in this process --------------------------------------------------------------------------

# The in-process proxy a log line belongs to: set in its thread before the event loop starts,
# so every task, callback and asyncio.to_thread worker of that loop carries it.
_owner: contextvars.ContextVar[InProcessProxy | None] = contextvars.ContextVar(
    "anonproxy_test_proxy", default=None)
_running: set[InProcessProxy] = set()
_running_lock = threading.Lock()


def _owners() -> list[InProcessProxy]:
    """Whose line this is: the proxy of the current context; from a thread none of them
    started (stem's event thread), every running one."""
    owner = _owner.get()
    if owner is not None:
        return [owner]
    with _running_lock:
        return list(_running)


class _Capture(logging.Handler):
    """Log records to the proxy they belong to: the `anonproxy` logger's, and those of the
    libraries under it (asyncio, aiohttp) that `serve` would have written to stderr."""

    def __init__(self, library: bool = False) -> None:
        super().__init__()
        # a library's records: from our loops only, and an error among them is a problem
        self.library = library

    def emit(self, record: logging.LogRecord) -> None:
        owners = [_owner.get()] if self.library else _owners()
        if not owners or owners[0] is None:
            return
        line = self.format(record) + "\n"
        for proxy in owners:
            proxy._append(line)
            if self.library and record.levelno >= logging.ERROR:
                proxy.problems.append(line)


_package_emit: list = []  # logs._emit as the package defines it, once replaced


def _emit_line(line: str) -> None:
    """logs._emit in the test process: each connection line to its proxy at once (the package
    batches them per loop iteration into one process-wide stream, which several proxies in one
    process would share)."""
    owners = _owners()
    if not owners:
        _package_emit[0](line)
    for proxy in owners:
        proxy._append(line)


def _capture_logs() -> None:
    """Route the package's log lines to the in-process proxies (idempotent)."""
    from anonproxy import logs

    if not _package_emit:
        _package_emit.append(logs._emit)
        logs._emit = _emit_line
    if not any(isinstance(h, _Capture) for h in logs.log.handlers):
        handler = _Capture()
        handler.setFormatter(logs._Formatter("%(asctime)s %(levelname)s %(message)s"))
        logs.log.addHandler(handler)
    logs.log.setLevel(logging.INFO)  # as `serve` without -v
    for library in ("asyncio", "aiohttp"):
        logger = logging.getLogger(library)
        if not any(isinstance(h, _Capture) for h in logger.handlers):
            handler = _Capture(library=True)
            handler.setLevel(logging.WARNING)  # what reaches `serve`'s stderr
            handler.setFormatter(logs._Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)


class InProcessProxy:
    """The real ProxyServer on its own event loop in a thread of the test process."""

    def __init__(self, profile: Path, listen: str = "127.0.0.1:0") -> None:
        self.profile = profile
        self.listen = listen
        self.host = ""
        self.port = 0
        self.server = None  # the ProxyServer, once started
        self.loop: asyncio.AbstractEventLoop | None = None
        self.problems: list[str] = []  # errors the loop caught, tasks left running
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"proxy {profile.name}",
                                        daemon=True)

    # the surface tests use, as Proxy's

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_log(self, text: str, timeout: float = 5) -> str:
        """The log once it contains `text`, or as it is after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: text in "".join(self._lines), timeout)
            return "".join(self._lines)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def login_url(self, timeout: float = 10) -> str:
        """A one-time dashboard login URL, as `serve` prints one."""
        url = self.in_loop(self.server.login_url, timeout=timeout)
        assert url is not None, "this proxy has no dashboard"
        return url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Stop as SIGTERM or SIGINT would: no new connections, drain, close. The exit code
        `serve` would have returned (0: a clean stop)."""
        if sig not in (signal.SIGTERM, signal.SIGINT):
            raise ValueError(f"an in-process proxy takes no signal {sig}: use start_proxy_process")
        if self._thread.is_alive() and self.loop is not None and self.server is not None:
            try:
                self.loop.call_soon_threadsafe(self.server.request_stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the proxy did not stop within {timeout} s:\n{self.log()[-2000:]}")
        return 0

    def in_loop(self, function, *args, timeout: float = 10):
        """Call `function(*args)` on the proxy's event loop (where its state lives); the result."""
        async def call():
            return function(*args)

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    # starting and running

    def start(self, timeout: float = 20) -> InProcessProxy:
        _capture_logs()
        with _running_lock:
            _running.add(self)
        self._thread.start()
        try:
            self.host, self.port = self._ready.result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _append(self, text: str) -> None:
        with self._changed:
            self._lines.append(text)
            self._changed.notify_all()

    def _run(self) -> None:
        from anonproxy.cli.serve import run_loop

        _owner.set(self)
        try:
            run_loop(self._main)
        except BaseException as error:  # noqa: BLE001 (the test is told, below or by stop())
            self._problem("the proxy's event loop ended with an error", error)
            if not self._ready.done():
                self._ready.set_exception(RuntimeError(f"proxy did not start: {error}"))
        finally:
            with _running_lock:
                _running.discard(self)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        self.loop = loop
        try:
            server, address = await self._start_server()
        except Exception as error:  # noqa: BLE001 (what `serve` would have said, to the test)
            self._ready.set_exception(RuntimeError(f"proxy did not start: {error}\n{self.log()}"))
            return
        self.server = server
        self._ready.set_result((address.host, address.port))
        try:
            await server.serve_until_signalled()
        finally:
            await self._reap_leftovers()

    async def _start_server(self):
        """What `serve` does up to its listening line (cli/serve.py), without the pid files,
        the signal handlers and stdout."""
        from anonproxy import logs
        from anonproxy.cli.explain import summarize
        from anonproxy.config.profiles import listen_problems, load_profile
        from anonproxy.runtime.server import ProxyServer
        from anonproxy.wire.address import parse_authority

        loaded = load_profile(str(self.profile))
        listen = parse_authority(self.listen, listening=True)
        problems = listen_problems(listen, loaded.profile.allow, loaded.profile.auth)
        if problems:
            raise RuntimeError(f"--listen {self.listen}: {'; '.join(problems)}")
        server = ProxyServer(loaded, listen, profile_ref=str(self.profile),
                             admin=loaded.profile.admin)
        try:
            address = await server.start()
        except OSError as error:
            raise RuntimeError(f"cannot listen on {server.listen}: {error.strerror}") from None
        try:
            await server.start_admin()
        except OSError as error:
            await server.stop()
            raise RuntimeError(f"cannot start the dashboard on {server.admin_address}: "
                               f"{error.strerror}") from None
        for line in summarize(loaded, server.ctx.plans):
            logs.log.info(line)
        server.contexts.warn_if_direct()
        logs.log.info("listening on %s (HTTP, HTTPS via CONNECT, SOCKS5)", address)
        return server, address

    async def _reap_leftovers(self) -> None:
        """Every task still running once the server returned is a leak: named, then ended."""
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            self.problems.append(f"a task was still running after the proxy stopped: {task!r}")
            task.cancel()
        for task, result in zip(left, await asyncio.gather(*left, return_exceptions=True),
                                strict=True):
            if isinstance(result, BaseException) and not isinstance(result,
                                                                    asyncio.CancelledError):
                self._problem(f"{task.get_name()} ended with an error", result)

    def _loop_error(self, loop, context: dict) -> None:
        """The loop's exception handler: what asyncio would log, kept as a problem."""
        message = context.get("message", "unhandled exception in the event loop")
        details = "".join(f"\n  {k}: {v!r}" for k, v in context.items()
                          if k not in ("message", "exception"))
        self._problem(message + details, context.get("exception"))

    def _problem(self, what: str, error: BaseException | None = None) -> None:
        text = what if error is None else \
            f"{what}\n{''.join(traceback.format_exception(error))}"
        self.problems.append(text)
        self._append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR {text}\n")


def launch_in_process(tmp_path: Path, profile_toml: str, name: str = "test",
                      listen: str = "127.0.0.1:0") -> InProcessProxy:
    """The in-process proxy for the profile tmp_path/NAME.toml (written from `profile_toml`),
    listening on `listen`; RuntimeError naming the reason when it does not start."""
    profile = tmp_path / f"{name}.toml"
    profile.write_text(profile_toml)
    return InProcessProxy(profile, listen).start()
