"""Dynamic batching: requests that arrive together are answered by one encoder batch and one ``search_many``.

Requests wait in a bounded queue; one worker thread takes what is there (and, while requests overlap, waits up
to ``batch_wait_ms`` for more), up to ``batch_size`` queries, and runs the batch. Being the only thread that runs
batches, it is the only one touching the encoder, the query-vector cache and the torch model, none of which are
safe to share between threads; the event loop only waits for its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ralm_es.errors import RalmError
from ralm_es.retrieve.retriever import RetrievedHit, Retriever
from ralm_es.retrieve.settings import Mode
from ralm_es.serve.predictor import PredictInput, Predictor
from ralm_es.store.base import Filter

P = TypeVar("P")
R = TypeVar("R")
# Seconds a client refused for a full queue is asked to wait (the Retry-After header).
RETRY_AFTER_S = 1


class QueueFull(Exception):
    """Every place in the queue is taken: the request is refused (503 with Retry-After), never left hanging."""


@dataclass
class _Waiting:
    key: Hashable
    payload: Any
    size: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    queued: float


class Batcher(Generic[P, R]):
    """Runs ``run(key, payloads)`` in one worker thread for the jobs gathered into a batch, once per key.

    ``run`` returns one result per payload, in order. A batch holds at most ``batch_size`` queries (a job counts
    its ``size``; one larger job runs alone), so ``batch_size=1`` answers requests one at a time. The first job
    of a batch waits at most ``wait_s`` for others, and only when the last batch held more than one job: a lone
    client is never kept waiting. At most ``queue_size`` jobs wait; ``submit`` refuses more with ``QueueFull``.
    """

    def __init__(
        self, run: Callable[[Hashable, list[P]], Sequence[R]], batch_size: int, wait_s: float, queue_size: int
    ) -> None:
        self.run = run
        self.batch_size = batch_size
        self.wait_s = wait_s
        self._queue: queue.Queue[_Waiting | None] = queue.Queue(maxsize=queue_size)
        # A job taken from the queue that did not fit in the batch being gathered; it opens the next one.
        self._held: _Waiting | None = None
        self._overlap = False
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def submit(self, key: Hashable, payload: P, size: int = 1) -> R:
        """The result for ``payload``, once a batch holding it has run (its exception, if the run raised one)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._ensure_worker()
        try:
            self._queue.put_nowait(_Waiting(key, payload, size, loop, future, time.monotonic()))
        except queue.Full:
            raise QueueFull(f"all {self._queue.maxsize} places in the queue are taken (serve.queue_size)") from None
        return await future

    @property
    def waiting(self) -> int:
        """Jobs in the queue, not yet taken into a batch."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the worker once the jobs queued before this call have run; a later ``submit`` starts a new one."""
        # Held throughout, so that a submit meanwhile cannot start a worker that would take the old one's stop.
        with self._starting:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def _ensure_worker(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="ralm-es-batcher", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            first = self._held or self._queue.get()
            self._held = None
            if first is None:
                return
            batch, size, stop = [first], first.size, False
            deadline = first.queued + (self.wait_s if self._overlap else 0.0)
            while size < self.batch_size:
                try:
                    left = deadline - time.monotonic()
                    job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if size + job.size > self.batch_size:
                    self._held = job
                    break
                batch.append(job)
                size += job.size
            self._overlap = len(batch) > 1
            groups: dict[Hashable, list[_Waiting]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                self._run_group(key, jobs)
            if stop:
                return

    def _run_group(self, key: Hashable, jobs: list[_Waiting]) -> None:
        try:
            results = self.run(key, [job.payload for job in jobs])
        except RalmError as exc:
            if len(jobs) == 1:
                _settle(jobs[0], error=exc)
                return
            # A refused input (an empty query, say) fails the whole call: run each job alone so that it fails
            # only its own request.
            for job in jobs:
                self._run_group(key, [job])
            return
        except Exception as exc:  # delivered to the waiting requests, whose handlers answer it
            for job in jobs:
                _settle(job, error=exc)
            return
        for job, result in zip(jobs, results, strict=True):
            _settle(job, result)


def _settle(job: _Waiting, result: Any = None, error: BaseException | None = None) -> None:
    def deliver() -> None:
        if job.future.done():  # the request was cancelled (its client went away)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    # RuntimeError: its event loop has closed, so nobody waits for this answer any more.
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(deliver)


# -- the jobs of the REST API ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchKey:
    """Queries that can share one ``search_many``: same mode, k and filters (``filters``: their JSON)."""

    mode: Mode
    k: int | None
    filters: str


@dataclass
class Queries:
    """One request's queries: one for /search, the inputs of /retrieve."""

    texts: list[str]
    exclude_ids: list[list[str]]
    filters: list[Filter]
    # The inputs' ids, for self-exclusion by document id; None where a request names none (/search).
    ids: list[str | None]


@dataclass(frozen=True)
class PredictKey:
    explain: bool


def _split(flat: Sequence[R], sizes: Sequence[int]) -> list[list[R]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start : start + size]))
        start += size
    return out


def api_runner(retriever: Retriever, predictor: Predictor | None) -> Callable[[Hashable, list[Any]], list[list[Any]]]:
    """``run`` for the API's Batcher: a group of /search and /retrieve requests is one ``search_many``, a group of
    /predict requests one ``Predictor.predict``; each request gets its own slice back."""

    def run(key: Hashable, payloads: list[Any]) -> list[list[Any]]:
        if isinstance(key, PredictKey):
            assert predictor is not None
            inputs: list[PredictInput] = [item for payload in payloads for item in payload]
            return _split(predictor.predict(inputs, explain=key.explain), [len(p) for p in payloads])
        assert isinstance(key, SearchKey)
        found: list[list[RetrievedHit]] = retriever.search_many(
            [text for p in payloads for text in p.texts],
            k=key.k,
            mode=key.mode,
            # Equal across the group: the key holds them.
            filters=payloads[0].filters,
            exclude_ids=[ids for p in payloads for ids in p.exclude_ids],
            input_ids=[item_id for p in payloads for item_id in p.ids],
        )
        return _split(found, [len(p.texts) for p in payloads])

    return run
