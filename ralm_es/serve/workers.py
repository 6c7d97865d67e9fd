"""``serve --workers N``: N ``ralm-es serve`` processes that accept on one listening socket.

This process binds the socket, starts one worker with the same command line and waits until it answers (so a
bad setting fails once, in that worker's one line, before any other starts), then starts the others. Each worker
loads its own encoder, retriever and batch queue: nothing is shared between them but the socket. SIGTERM or SIGINT
here stops every worker gracefully; a worker that exits on its own stops the rest, and the status says so, for
the supervisor (systemd, Kubernetes) to restart the service.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ralm_es.errors import RalmError
from ralm_es.serve.settings import ServeSettings

# Set in a worker's environment: the listening socket's file descriptor, inherited from this process.
FD_ENV = "RALM_ES_SERVE_FD"
STARTUP_S = 300.0


class WorkersError(RalmError):
    """The listening socket cannot be bound."""


def listen(settings: ServeSettings) -> socket.socket:
    try:
        sock = socket.create_server((settings.host, settings.port), backlog=2048)
    except OSError as exc:
        raise WorkersError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _answers(url: str) -> bool:
    """True once a worker answers ``/health`` at all (a 503 for an unreachable cluster is an answer too)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def run_workers(settings: ServeSettings, argv: list[str], notice: Callable[[str], None]) -> int:
    """Run ``settings.workers`` workers of the command line ``argv`` until a signal or a worker's exit; the exit
    status for this process."""
    sock = listen(settings)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    env = {**os.environ, FD_ENV: str(sock.fileno())}
    command = [sys.executable, "-m", "ralm_es.cli.main", *argv]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [start()]
    status = 0
    try:
        deadline = time.monotonic() + STARTUP_S
        while not stop and not _answers(url):
            if workers[0].poll() is not None:
                # The worker said why, in one line.
                return workers[0].returncode or 1
            if time.monotonic() > deadline:
                notice(f"the first worker did not answer {url}/health within {STARTUP_S:.0f} s")
                return 1
            time.sleep(0.2)
        if not stop:
            workers += [start() for _ in range(settings.workers - 1)]
            notice(f"{settings.workers} workers (pids {', '.join(str(w.pid) for w in workers)}) on {url}")
        while not stop:
            ended = next((w for w in workers if w.poll() is not None), None)
            if ended is not None:
                notice(f"worker {ended.pid} exited with status {ended.returncode}: stopping the others")
                status = 1
                break
            time.sleep(0.5)
        return status
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=settings.graceful_timeout + 30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
