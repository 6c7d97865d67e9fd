"""``python -m bench.serve_load [--quick] [--duration S] [--repeats R] [--clients N ...] [--batch-sizes B ...]
[--workers W ...] [--server-runtimes RT ...]``: a bounded load test of ``ralm-es serve``, one-at-a-time against
dynamic batching, one worker process or several, the query encoder under one runtime or several.

A scratch index is built from the packaged sample corpus (encoder runtime ``--runtime``); one ``ralm-es serve``
(real uvicorn, bearer-token auth on) per ``--batch-size``, ``--workers`` and ``--server-runtimes`` triple runs on
127.0.0.1 (``--batch-size 1`` answers requests one at a time in each worker process). For each number of clients,
each server in turn gets a short warm-up, then N client threads in this process post ``/search`` requests in a
closed loop until the duration or the request cap is reached: the configurations alternate, and the whole round is
repeated ``--repeats`` times, so a change in the machine's load falls on all of them. Per run, total requests,
errors (any non-200 or transport failure), throughput, latency percentiles and the CPU the load generator (this
process) and the server (its process tree, read from /proc) used, in cores, go to
``bench/results/serve_load.json``; the exit status is 1 when any request failed. The servers and the
index are removed afterwards, also when the run is interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import load_average
from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.es.client import connect
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.model_folder import default_model_path
from ralm_es.node.cluster import free_port
from ralm_es.onnx_runtime import RUNTIMES, Runtime
from ralm_es.store.elastic import ElasticsearchBackend

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
STARTUP_S = 180.0
WARMUP_S = 3.0
# Numbers the unique queries, across every run of this process (a per-run count repeated the warm-up's queries).
SERIAL = itertools.count(1)


@dataclass
class Tally:
    """What the client threads observed; appended under a lock."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())


def queries() -> list[str]:
    """The sample claims: short natural-language queries about the sample corpus."""
    lines = sample_path("sample_claims.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def build_index(es_url: str, model: str, name: str, runtime: Runtime) -> int:
    client = connect(ConnectionSettings(hosts=[es_url], request_timeout=120))
    backend = ElasticsearchBackend(client, name)
    with tempfile.TemporaryDirectory(prefix="ralm-serve-load-") as ckpt:
        summary = Ingest(backend, IngestSettings(model=model, runtime=runtime), checkpoint_dir=Path(ckpt)).run(
            [sample_path("sample_corpus.jsonl")]
        )
    return summary.indexed


def drop_index(es_url: str, name: str) -> None:
    client = connect(ConnectionSettings(hosts=[es_url], request_timeout=120))
    created = client.indices.get(index=f"{name}*", expand_wildcards="all").body
    if created:
        client.indices.delete(index=",".join(created))


def start_server(
    es_url: str,
    index: str,
    model: str,
    runtime: Runtime,
    mode: str,
    port: int,
    token: str,
    batch_size: int,
    workers: int,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_API_TOKEN": token}
    args = ["serve", "--index", index, "--mode", mode, "--query-model", model, "--host", HOST, "--port", str(port)]
    args += ["--batch-size", str(batch_size), "--runtime", runtime, "--workers", str(workers)]
    # The access log (one line a request) is not wanted here: it would cost the server time and fill a pipe.
    return subprocess.Popen(
        [sys.executable, "-m", "ralm_es.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(url: str, server: subprocess.Popen[bytes], workers: int) -> None:
    """Wait until each of the server's ``workers`` processes has answered ``/health``: a worker listens only once
    ready, and each new connection may reach any listening one, so the load starts on all of them."""
    deadline = time.monotonic() + STARTUP_S
    answered: set[int] = set()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ralm-es serve exited with status {server.returncode} before answering")
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200:
                answered.add(response.json()["pid"])
                if len(answered) == workers:
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not all {workers} workers of ralm-es serve answered {url}/health within {STARTUP_S:.0f} s")


def client_loop(
    http: httpx.Client,
    texts: list[str],
    start: int,
    stop_at: float,
    cap: int,
    issued: list[int],
    tally: Tally,
    unique: bool,
) -> None:
    """Post queries until the deadline or until ``cap`` requests were issued across all threads."""
    i = start
    while time.monotonic() < stop_at:
        with tally.lock:
            if issued[0] >= cap:
                return
            issued[0] += 1
            serial = next(SERIAL)
        text = texts[i % len(texts)]
        if unique:
            # A query never sent before, in this run or an earlier one (its warm-up, another round): the server's
            # query-vector cache cannot answer it, the encoder must.
            text = f"{text} {serial}"
        began = time.perf_counter()
        try:
            response = http.post("/search", json={"text": text, "k": 5})
            error = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        elapsed = (time.perf_counter() - began) * 1000
        with tally.lock:
            if error is None:
                tally.latencies_ms.append(elapsed)
            else:
                tally.errors[error] += 1
        i += 1


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` and its live descendants (a server's worker processes), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            # Fields after the parenthesised command name: state is the first, utime the 12th, stime the 13th.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = [
                int(child)
                for task in Path(f"/proc/{current}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended between the listing and the read
        total += (int(fields[11]) + int(fields[12])) / ticks
        todo += children
    return total


def run_load(
    url: str, token: str, clients: int, duration: float, cap: int, unique: bool, server: int
) -> tuple[Tally, float, dict[str, float]]:
    """``clients`` threads posting for ``duration`` s: what they saw, the seconds it took, and the CPU cores the
    load generator and the server process tree ``server`` used meanwhile."""
    texts = queries()
    tally = Tally()
    issued = [0]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        client_cpu, server_cpu = time.process_time(), tree_cpu_seconds(server)
        started = time.monotonic()
        stop_at = started + duration
        with ThreadPoolExecutor(max_workers=clients) as pool:
            for n in range(clients):
                pool.submit(client_loop, http, texts, n, stop_at, cap, issued, tally, unique)
        elapsed = time.monotonic() - started
        cores = {
            "load_generator": (time.process_time() - client_cpu) / elapsed,
            "server": (tree_cpu_seconds(server) - server_cpu) / elapsed,
        }
    return tally, elapsed, cores


def summarise(tally: Tally, elapsed: float, cores: dict[str, float]) -> dict[str, Any]:
    lat = np.array(tally.latencies_ms) if tally.latencies_ms else np.array([float("nan")])
    return {
        "requests": tally.requests,
        "ok": len(tally.latencies_ms),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "seconds": round(elapsed, 2),
        # Answered requests only: a refusal (503 from a full queue) is no throughput.
        "throughput_rps": round(len(tally.latencies_ms) / elapsed, 2),
        "cpu_cores": {name: round(value, 2) for name, value in cores.items()},
        "latency_ms": {
            name: round(float(value), 2)
            for name, value in {
                "p50": np.percentile(lat, 50),
                "p95": np.percentile(lat, 95),
                "p99": np.percentile(lat, 99),
                "mean": lat.mean(),
                "max": lat.max(),
            }.items()
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s per configuration instead of 30 s")
    parser.add_argument(
        "--duration", type=float, help="seconds of load per configuration (default 30, 10 with --quick)"
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[48, 1], help="concurrent client threads, one run each (48 1)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 64],
        help="serve --batch-size of each server (default 1 64: one at a time, then batched)",
    )
    parser.add_argument(
        "--queries",
        choices=["repeated", "unique", "both"],
        default="repeated",
        help="the sample claims in turn (their vectors soon cached), a new text every request (the encoder runs "
        "for each), or a run of each",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="serve --workers of each server, one server per batch size and worker count (default 1)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds over every configuration, interleaved (default 3)"
    )
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop a run after this many requests")
    parser.add_argument("--mode", choices=["bm25", "dense", "hybrid"], default="hybrid")
    parser.add_argument("--model", help="encoder folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="torch", help="encoder runtime of the index (and of the servers)"
    )
    parser.add_argument(
        "--server-runtimes",
        choices=RUNTIMES,
        nargs="+",
        help="query encoder runtimes of the servers, one server each (default: the index's); they must answer it",
    )
    parser.add_argument("--es-url", default=os.environ.get("RALM_ES_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 10.0 if args.quick else 30.0
    args.server_runtimes = args.server_runtimes or [args.runtime]
    counts = [*args.clients, *args.batch_sizes, *args.workers, args.max_requests, args.repeats]
    if args.duration <= 0 or min(counts) < 1:
        parser.error("--duration, --clients, --batch-sizes, --workers, --repeats and --max-requests must be positive")
    return args


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A terminated run still stops its servers and deletes its index (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    model = str(args.model or default_model_path())
    index = f"bench-serve-{uuid.uuid4().hex[:8]}"
    token = secrets.token_urlsafe(24)
    servers: dict[tuple[int, int, Runtime], tuple[str, subprocess.Popen[bytes]]] = {}
    runs = []
    try:
        passages = build_index(args.es_url, model, index, args.runtime)
        ports: set[int] = set()
        for batch_size, workers, runtime in itertools.product(args.batch_sizes, args.workers, args.server_runtimes):
            # Each server binds its port only once started: a port handed out before must not come back.
            while (port := free_port()) in ports:
                pass
            ports.add(port)
            server = start_server(args.es_url, index, model, runtime, args.mode, port, token, batch_size, workers)
            servers[batch_size, workers, runtime] = (f"http://{HOST}:{port}", server)
        for (_, workers, _), (url, server) in servers.items():
            wait_ready(url, server, workers)
        kinds = ["repeated", "unique"] if args.queries == "both" else [args.queries]
        for repeat, kind, clients in itertools.product(range(1, args.repeats + 1), kinds, args.clients):
            for (batch_size, workers, runtime), (url, server) in servers.items():
                unique = kind == "unique"
                run_load(url, token, clients, WARMUP_S, args.max_requests, unique, server.pid)
                load_start = load_average()
                tally, elapsed, cores = run_load(
                    url, token, clients, args.duration, args.max_requests, unique, server.pid
                )
                run = {"repeat": repeat, "queries": kind, "clients": clients, "batch_size": batch_size}
                run["workers"] = workers
                run["runtime"] = runtime
                run["load_start"] = load_start
                runs.append({**run, "load_end": load_average(), **summarise(tally, elapsed, cores)})
                lat = runs[-1]["latency_ms"]
                print(
                    f"repeat {repeat}/{args.repeats}, {kind} queries, {clients} clients, batch size {batch_size}, "
                    f"{workers} workers, runtime {runtime}: "
                    f"{runs[-1]['requests']} requests, "
                    f"{runs[-1]['errors']} errors, {runs[-1]['throughput_rps']} req/s, p50 {lat['p50']} ms, "
                    f"p99 {lat['p99']} ms, CPU cores: load generator {cores['load_generator']:.2f}, server "
                    f"{cores['server']:.2f}",
                    file=sys.stderr,
                )
        results = {
            "command": " ".join(["python -m bench.serve_load", *(argv if argv is not None else sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "target": "POST /search on 127.0.0.1 (ralm-es serve, bearer token)",
            "mode": args.mode,
            "k": 5,
            "model": "all-MiniLM-L6-v2 (packaged)" if args.model is None else model,
            "runtime": args.runtime,
            "passages": passages,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "warmup_s": WARMUP_S,
            "max_requests": args.max_requests,
            "cpus": os.cpu_count(),
            "runs": runs,
        }
    finally:
        for _, server in servers.values():
            stop(server)
        drop_index(args.es_url, index)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"-> {args.out}", file=sys.stderr)
    if any(run["errors"] for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
