"""Dynamic batching in ``ralm-es serve``: the Batcher on its own, then the app on the real node, where requests
answered together must get exactly what they get alone, and a full queue is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Sequence
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from ralm_es.config import ConfigError, from_dict
from ralm_es.embed import Encoder
from ralm_es.errors import RalmError
from ralm_es.retrieve.retriever import RetrievalSettings, RetrievedHit, Retriever
from ralm_es.serve.app import create_app
from ralm_es.serve.batching import Batcher, QueueFull
from ralm_es.serve.settings import ServeSettings
from ralm_es.store.base import Filter
from ralm_es.store.elastic import ElasticsearchBackend


class Gate:
    """Holds every run until opened, and tells when the first run is being held."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.opened.wait(timeout=60), "the gate was never opened"


class Recorder:
    """A Batcher ``run`` that records the groups it was given; a payload "bad" is a refused input."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.calls: list[tuple[Hashable, list[str]]] = []

    def __call__(self, key: Hashable, payloads: list[str]) -> list[str]:
        self.gate.hold()
        self.calls.append((key, list(payloads)))
        if "bad" in payloads:
            raise RalmError("bad input")
        if "boom" in payloads:
            raise OSError("boom")
        return [f"{key}:{p}" for p in payloads]


async def held_then(batcher: Batcher[str, str], gate: Gate, jobs: list[tuple[str, str, int]]) -> list[Any]:
    """Submit ("first") and hold its run, queue ``jobs`` meanwhile, then open the gate; the answers in order."""
    first = asyncio.ensure_future(batcher.submit("x", "first"))
    await asyncio.to_thread(gate.entered.wait, 60)
    tasks = [asyncio.ensure_future(batcher.submit(key, payload, size)) for key, payload, size in jobs]
    # One pass of the loop: every task has put its job in the queue and waits for its answer.
    await asyncio.sleep(0)
    assert batcher.waiting == len(jobs)
    gate.opened.set()
    return await asyncio.gather(first, *tasks, return_exceptions=True)


def test_jobs_that_wait_together_run_as_one_call_per_key() -> None:
    gate = Gate()
    run = Recorder(gate)
    batcher: Batcher[str, str] = Batcher(run, batch_size=64, wait_s=0.005, queue_size=16)
    jobs = [("a", "1", 1), ("b", "2", 1), ("a", "3", 1), ("a", "4", 2), ("b", "5", 1)]
    answers = asyncio.run(held_then(batcher, gate, jobs))
    batcher.close()
    assert answers == ["x:first", "a:1", "b:2", "a:3", "a:4", "b:5"]
    assert run.calls == [("x", ["first"]), ("a", ["1", "3", "4"]), ("b", ["2", "5"])]


def test_a_batch_holds_at_most_batch_size_queries() -> None:
    gate = Gate()
    run = Recorder(gate)
    batcher: Batcher[str, str] = Batcher(run, batch_size=3, wait_s=0.0, queue_size=16)
    jobs = [("a", "1", 1), ("a", "2", 1), ("a", "3", 2), ("a", "4", 5), ("a", "5", 1)]
    asyncio.run(held_then(batcher, gate, jobs))
    batcher.close()
    # "3" would make the first batch 4 queries: it opens the next; "4" is larger than a batch and runs alone.
    assert [payloads for _, payloads in run.calls] == [["first"], ["1", "2"], ["3"], ["4"], ["5"]]


def test_batch_size_1_answers_one_job_at_a_time() -> None:
    gate = Gate()
    run = Recorder(gate)
    batcher: Batcher[str, str] = Batcher(run, batch_size=1, wait_s=0.005, queue_size=16)
    jobs = [("a", str(i), 1) for i in range(4)]
    answers = asyncio.run(held_then(batcher, gate, jobs))
    batcher.close()
    assert answers == ["x:first", "a:0", "a:1", "a:2", "a:3"]
    assert [payloads for _, payloads in run.calls] == [["first"], ["0"], ["1"], ["2"], ["3"]]


def test_a_batch_waits_for_more_only_while_requests_overlap() -> None:
    gate = Gate()
    run = Recorder(gate)
    # A wait far longer than the test: a batch that waits closes only when it is full (two jobs).
    batcher: Batcher[str, str] = Batcher(run, batch_size=2, wait_s=600.0, queue_size=16)

    async def scenario() -> None:
        # The first job ran alone: no overlap seen, so a lone job next is answered without waiting.
        await held_then(batcher, gate, [])
        assert await asyncio.wait_for(batcher.submit("a", "lone"), timeout=60) == "a:lone"
        # Two jobs in one batch: requests overlap now, so the next batch waits for a second job.
        run.gate = Gate()
        await held_then(batcher, run.gate, [("a", "1", 1), ("a", "2", 1)])
        first = asyncio.ensure_future(batcher.submit("a", "3"))
        await asyncio.sleep(0.2)
        assert await asyncio.gather(first, batcher.submit("a", "4")) == ["a:3", "a:4"]

    asyncio.run(scenario())
    batcher.close()
    assert [payloads for _, payloads in run.calls] == [["first"], ["lone"], ["first"], ["1", "2"], ["3", "4"]]


def test_a_refused_input_fails_only_its_own_job() -> None:
    gate = Gate()
    run = Recorder(gate)
    batcher: Batcher[str, str] = Batcher(run, batch_size=64, wait_s=0.0, queue_size=16)
    answers = asyncio.run(held_then(batcher, gate, [("a", "1", 1), ("a", "bad", 1), ("a", "2", 1), ("b", "boom", 1)]))
    batcher.close()
    assert answers[:2] == ["x:first", "a:1"] and answers[3] == "a:2"
    assert isinstance(answers[2], RalmError) and str(answers[2]) == "bad input"
    # Any other failure (Elasticsearch down, say) is every job's answer: running them alone would not help.
    assert isinstance(answers[4], OSError)
    assert [payloads for _, payloads in run.calls] == [["first"], ["1", "bad", "2"], ["1"], ["bad"], ["2"], ["boom"]]


def test_a_full_queue_refuses_at_once_and_close_stops_the_worker() -> None:
    gate = Gate()
    batcher: Batcher[str, str] = Batcher(Recorder(gate), batch_size=1, wait_s=0.0, queue_size=2)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit("a", "0"))
        await asyncio.to_thread(gate.entered.wait, 60)
        queued = [asyncio.ensure_future(batcher.submit("a", str(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match=r"all 2 places .* \(serve.queue_size\)"):
            await batcher.submit("a", "3")
        gate.opened.set()
        return await asyncio.gather(first, *queued)

    assert asyncio.run(scenario()) == ["a:0", "a:1", "a:2"]
    batcher.close()
    assert batcher.waiting == 0
    # A submit after close starts a new worker.
    assert asyncio.run(batcher.submit("a", "4")) == "a:4"
    batcher.close()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"batch_size": 0}, "serve.batch_size must be at least 1, got 0"),
        ({"queue_size": 0}, "serve.queue_size must be at least 1, got 0"),
        ({"batch_wait_ms": -1}, "serve.batch_wait_ms must not be negative, got -1"),
    ],
)
def test_batching_settings_are_checked(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ServeSettings, section, where="ralm.yaml: serve")


# -- the app on the real node ----------------------------------------------------------------------------
class GatedRetriever(Retriever):
    """The real retriever, whose ``search_many`` calls wait for the gate and are recorded (query counts)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = Gate()
        self.sizes: list[int] = []

    def search_many(self, queries: Sequence[str], *args: Any, **kwargs: Any) -> list[list[RetrievedHit]]:
        self.gate.hold()
        self.sizes.append(len(queries))
        return super().search_many(queries, *args, **kwargs)


@pytest.fixture(scope="module")
def retriever(es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder) -> Retriever:
    return Retriever(ElasticsearchBackend(es_client, sample_index), tiny_encoder, RetrievalSettings(mode="hybrid", k=5))


def gated(retriever: Retriever) -> GatedRetriever:
    return GatedRetriever(retriever.backend, retriever.encoder, retriever.settings)


async def held_requests(
    api: httpx.AsyncClient, held: GatedRetriever, first: tuple[str, dict[str, Any]], rest: list[tuple[str, Any]]
) -> list[httpx.Response]:
    """Post ``first`` and hold its batch; post ``rest`` and wait until they all queue; then let the batches run."""
    head = asyncio.ensure_future(api.post(first[0], json=first[1]))
    await asyncio.to_thread(held.gate.entered.wait, 60)
    tasks = [asyncio.ensure_future(api.post(path, json=body)) for path, body in rest]
    while (await api.get("/health")).json()["queue"]["waiting"] < len(rest):
        await asyncio.sleep(0.01)
    held.gate.opened.set()
    return await asyncio.gather(head, *tasks)


def assert_same_hits(got: list[dict[str, Any]], found: list[RetrievedHit]) -> None:
    """The same passages in the same order with the same ranks and fields, and the same scores to float32 precision:
    a batched encoder pass pads its queries to one length, which can move a query vector in its last bits."""
    expected = [h.to_json() for h in found]

    def fields(hit: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in hit.items() if key not in ("score", "scores")}

    assert [fields(h) for h in got] == [fields(h) for h in expected]
    for hit, want in zip(got, expected, strict=True):
        assert hit["score"] == pytest.approx(want["score"], rel=1e-5)
        assert hit["scores"].keys() == want["scores"].keys()
        for name, value in want["scores"].items():
            assert hit["scores"][name] == (None if value is None else pytest.approx(value, rel=1e-5))


def test_requests_answered_together_get_what_they_get_alone(retriever: Retriever) -> None:
    held = gated(retriever)
    app = create_app(ServeSettings(batch_size=64, batch_wait_ms=5), held)
    medicine = [{"field": "topic", "kind": "term", "value": "medicine"}]
    texts = ["insulin lowers blood glucose", "who founded the company", "the moon orbits the earth", "vaccines"]
    first_hit = retriever.search("insulin", k=5)[0].id
    rest: list[tuple[str, Any]] = [
        *[("/search", {"text": t}) for t in texts],
        ("/search", {"text": "insulin", "exclude_ids": [first_hit]}),
        ("/retrieve", {"inputs": [{"id": "r1", "text": texts[1]}, {"id": "r2", "text": texts[2]}]}),
        ("/search", {"text": texts[0], "k": 3, "mode": "bm25"}),
        ("/search", {"text": texts[3], "k": 3, "mode": "bm25"}),
        ("/search", {"text": texts[1], "k": 8, "filters": medicine}),
        ("/search", {"text": "   ", "k": 3, "mode": "bm25"}),
        ("/search", {"text": texts[2], "mode": "dense"}),
    ]

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as api:
            return await held_requests(api, held, ("/search", {"text": "glucose", "mode": "bm25"}), rest)

    head, *answers = asyncio.run(scenario())
    assert head.status_code == 200
    assert_same_hits(head.json()["hits"], retriever.search("glucose", mode="bm25"))
    for (path, body), resp in zip(rest, answers, strict=True):
        if body.get("text") == "   ":
            assert resp.status_code == 400 and "empty query" in resp.json()["detail"]
            continue
        assert resp.status_code == 200, (body, resp.text)
        options = {"k": body.get("k"), "mode": body.get("mode")}
        options["filters"] = [Filter(**f) for f in body.get("filters", [])]
        if path == "/retrieve":
            for result, item in zip(resp.json()["results"], body["inputs"], strict=True):
                assert_same_hits(result["hits"], retriever.search(item["text"], **options))
            assert [r["id"] for r in resp.json()["results"]] == ["r1", "r2"]
        else:
            expected = retriever.search(body["text"], exclude_ids=body.get("exclude_ids", ()), **options)
            assert_same_hits(resp.json()["hits"], expected)
    assert first_hit not in {h["id"] for h in answers[4].json()["hits"]}
    # The held request alone; then one search_many per parameter set: 5 default searches and the 2 inputs of
    # /retrieve; the two bm25 k=3 searches with the empty one (refused, so each ran alone); the filtered one;
    # the dense one.
    assert held.sizes[0] == 1 and sorted(held.sizes) == [1, 1, 1, 1, 1, 1, 3, 7]


def test_a_full_queue_is_503_with_retry_after(retriever: Retriever) -> None:
    held = gated(retriever)
    app = create_app(ServeSettings(batch_size=1, queue_size=1), held)

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as api:
            head = asyncio.ensure_future(api.post("/search", json={"text": "insulin", "mode": "bm25"}))
            await asyncio.to_thread(held.gate.entered.wait, 60)
            second = asyncio.ensure_future(api.post("/search", json={"text": "glucose", "mode": "bm25"}))
            while (await api.get("/health")).json()["queue"]["waiting"] < 1:
                await asyncio.sleep(0.01)
            refused = await api.post("/retrieve", json={"inputs": [{"text": "moon"}], "mode": "bm25"})
            held.gate.opened.set()
            return refused, list(await asyncio.gather(head, second))

    refused, answered = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "all 1 places in the queue are taken (serve.queue_size)" in refused.json()["detail"]
    assert [r.status_code for r in answered] == [200, 200]
    assert_same_hits(answered[1].json()["hits"], retriever.search("glucose", mode="bm25"))
    assert held.sizes == [1, 1]
