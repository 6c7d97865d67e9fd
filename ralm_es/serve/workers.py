"""``serve --workers N``: N ``ralm-es serve`` processes, each listening on the one port with ``SO_REUSEPORT``.

Each worker opens its own listening socket once its models are loaded, so the kernel spreads new connections
evenly over the workers that are ready (with one shared socket, whichever worker accepted first took them: 48/0,
46/2 and 29/19 of 48 keep-alive clients in three runs, measured; 28/20, 27/21 and 25/23 now). This process holds
the port bound, not listening, from the start (so a port in use fails at once, in one line), starts one worker with
the same command line and waits until it listens (so a bad setting fails once, in that worker's one line, before
any other starts), then starts the others, and says so once all of them listen. Each worker loads its own encoder,
retriever and batch queue: nothing is shared between them but the port. SIGTERM or SIGINT here stops every worker
gracefully; a worker that exits on its own stops the rest, and the status says so, for the supervisor (systemd,
Kubernetes) to restart the service.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from ralm_es.errors import RalmError
from ralm_es.serve.settings import ServeSettings

# Set in a worker's environment: the pipe on which it reports, with one byte, that it listens.
READY_FD_ENV = "RALM_ES_SERVE_READY_FD"
STARTUP_S = 300.0


class WorkersError(RalmError):
    """The port cannot be bound, or the workers do not all listen in time."""


def _reuse_port_socket(settings: ServeSettings) -> socket.socket:
    """A socket bound to the serve port, not listening, that other sockets with ``SO_REUSEPORT`` may share."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise WorkersError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    return sock


def listen(settings: ServeSettings) -> socket.socket:
    """A worker's own listening socket on the shared port."""
    sock = _reuse_port_socket(settings)
    sock.listen(2048)
    return sock


def report_ready(fd: int) -> None:
    """Tell the parent that this worker listens."""
    os.write(fd, b"\n")
    os.close(fd)


def _await_ready(
    pipe: int, workers: list[subprocess.Popen[bytes]], wanted: int, stopping: Callable[[], bool]
) -> subprocess.Popen[bytes] | None:
    """Wait until ``wanted`` more workers listen (or a signal asks to stop): None then, or the first worker that
    exited meanwhile."""
    deadline = time.monotonic() + STARTUP_S
    while wanted > 0 and not stopping():
        ended = next((w for w in workers if w.poll() is not None), None)
        if ended is not None:
            return ended
        if time.monotonic() > deadline:
            raise WorkersError(f"not every worker listened within {STARTUP_S:.0f} s")
        readable, _, _ = select.select([pipe], [], [], 0.2)
        if readable:
            wanted -= len(os.read(pipe, 64))
    return None


def run_workers(settings: ServeSettings, argv: list[str], notice: Callable[[str], None]) -> int:
    """Run ``settings.workers`` workers of the command line ``argv`` until a signal or a worker's exit; the exit
    status for this process."""
    reserved = _reuse_port_socket(settings)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{settings.port}"
    ready_read, ready_write = os.pipe()
    env = {**os.environ, READY_FD_ENV: str(ready_write)}
    command = [sys.executable, "-m", "ralm_es.cli.main", *argv]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, pass_fds=(ready_write,))

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [start()]
    status = 0
    try:
        first = _await_ready(ready_read, workers, 1, lambda: stop)
        if first is not None:
            # The worker said why, in one line.
            return first.returncode or 1
        if not stop:
            workers += [start() for _ in range(settings.workers - 1)]
            ended = _await_ready(ready_read, workers, settings.workers - 1, lambda: stop)
            if ended is not None:
                notice(f"worker {ended.pid} exited with status {ended.returncode}: stopping the others")
                return 1
        if not stop:
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
        for fd in (ready_read, ready_write):
            os.close(fd)
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
