"""What every benchmark shares: its settings, summaries of repeated timings, the machine, and scratch indices."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from elasticsearch import Elasticsearch

from ralm_es.onnx_runtime import Runtime

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    """How much of each data set to use and how often to repeat. ``None`` means the whole set."""

    quick: bool = False
    es_url: str = "http://127.0.0.1:9200"
    model: str | None = None
    abstracts: int | None = None
    queries: int | None = None
    latency_queries: int = 200
    many_queries: int = 1000
    conll_sentences: int | None = None
    repeats: int = 3
    # One pass over all CoNLL sentences takes minutes on two cores.
    conll_repeats: int = 1
    encode_batch: int = 64
    # ONNX runtimes ralm-es's ingest is measured with too, each against its own encoder-alone limit.
    ingest_runtimes: list[Runtime] = field(default_factory=list)
    peers: bool = True
    train: bool = True
    only: list[str] = field(default_factory=list)
    docs_dir: Path = REPO / "docs"
    results_dir: Path = REPO / "bench" / "results"

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> BenchConfig:
        values: dict[str, Any] = {
            "quick": True,
            "abstracts": 60,
            "queries": 50,
            "latency_queries": 30,
            "many_queries": 50,
            "conll_sentences": 300,
            "repeats": 1,
        }
        return cls(**{**values, **overrides})

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, with the runs themselves."""
    array = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
        "runs": [float(v) for v in array],
    }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {f"p{q}": float(np.percentile(array, q)) for q in (50, 95, 99)}


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-run ratios of two systems measured side by side in the same repetition, summarized."""
    return summarize([n / d for n, d in zip(numerators, denominators, strict=True)])


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def machine_info(client: Elasticsearch) -> dict[str, Any]:
    nodes = client.nodes.info(filter_path="nodes.*.version,nodes.*.jvm.mem.heap_max_in_bytes").body["nodes"]
    node = next(iter(nodes.values()))
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "elasticsearch_client": _version("elasticsearch"),
        "elasticsearch_server": node["version"],
        "es_heap_gib": round(node.get("jvm", {}).get("mem", {}).get("heap_max_in_bytes", 0) / 2**30, 1),
        "ralm_es": _version("ralm-es"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class ScratchIndices:
    """Uniquely named indices for one harness run on a shared node; ``cleanup`` deletes every one of them."""

    def __init__(self, client: Elasticsearch) -> None:
        self.client = client
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"

    def name(self, label: str) -> str:
        return f"{self.prefix}-{label}"

    def drop(self, name: str) -> None:
        """Delete the index or alias ``name`` and the concrete indices behind it."""
        found = self.client.indices.get(index=f"{name}*", expand_wildcards="all").body
        if found:
            # Wildcard deletes are refused (action.destructive_requires_name), so each index is named.
            self.client.indices.delete(index=",".join(found))

    def cleanup(self) -> None:
        self.drop(self.prefix)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_qrels(path: Path, judged: Iterable[tuple[str, str]]) -> int:
    """A BEIR qrels TSV judging each (query id, document id) pair relevant; the number of pairs written."""
    rows = [f"{query}\t{doc}\t1" for query, doc in judged]
    path.write_text("\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n", encoding="utf-8")
    return len(rows)


def head_lines(src: Path, n: int | None, dst: Path) -> Path:
    """The first ``n`` lines of ``src`` in ``dst`` (``src`` itself when ``n`` is None)."""
    if n is None:
        return src
    with src.open(encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        for _, line in zip(range(n), fin, strict=False):
            fout.write(line)
    return dst


def head_conll(src: Path, sentences: int | None, dst: Path) -> Path:
    """The first ``sentences`` sentences of a CoNLL file (``src`` itself when None)."""
    if sentences is None:
        return src
    done = 0
    in_sentence = False
    with src.open(encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        for line in fin:
            blank = not line.strip()
            if blank and in_sentence:
                done += 1
                in_sentence = False
            elif not blank and not line.startswith("-DOCSTART-"):
                in_sentence = True
            fout.write(line)
            if done >= sentences:
                break
    return dst


@dataclass
class Session:
    """One harness run: its settings, the node, scratch indices and files, and what one benchmark leaves the next."""

    config: BenchConfig
    client: Elasticsearch
    scratch: ScratchIndices
    workdir: Path
    encoder: Any
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> str:
        return str(self.encoder.path)


class DelayProxy:
    """A TCP proxy on a free local port to the node at ``url`` that passes every byte of a request on ``delay_s``
    later and every reply at once: the node as a client ``delay_s`` of round trip away would see it (a cloud
    deployment), for timings. ``with DelayProxy(url, 0.005) as distant_url: ...``"""

    def __init__(self, url: str, delay_s: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 9200
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> str:
        self.thread.start()
        start = asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result()
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    async def _close(self) -> None:
        """Stop listening and end the connections a client still keeps open (its pool outlives the timings): each
        side closed, their pipes read to the end."""
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*(task for task in asyncio.all_tasks() if task is not asyncio.current_task()))

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        node_r, node_w = await asyncio.open_connection(self.host, self.port)
        self.writers += [client_w, node_w]
        await asyncio.gather(self._pipe(client_r, node_w, self.delay_s), self._pipe(node_r, client_w, 0.0))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
        # Each chunk leaves delay_s after it came, not after the one before it: a link's latency, not a queue.
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(1 << 16):
                loop.call_later(delay_s, writer.write, data)
        except ConnectionError:
            pass
        loop.call_later(delay_s, writer.close)
