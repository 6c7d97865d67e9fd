"""The local backend on hand-written passages and hand-made unit vectors: writes, recovery and search."""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ralm_es.corpus.types import Passage
from ralm_es.store.base import EncoderRecord, Filter, IndexInfo, IndexSpec, SearchRequest, StoreError
from ralm_es.store.local import PASSAGES, VECTORS, LocalBackend

ROOT2 = 1 / math.sqrt(2)
PASSAGES_BY_ID = {
    "volcano": (
        "Volcanoes",
        "Lava and ash pour from the volcano during an eruption, and magma rises through the crust.",
        {"topic": "geo", "year": 2019, "tags": ["earth", "fire"]},
        [1.0, 0.0, 0.0],
    ),
    "glacier": (
        "Glaciers",
        "A glacier is a slow river of ice that carves valleys as it moves downhill.",
        {"topic": "geo", "year": 2015, "tags": ["earth", "ice"]},
        [0.0, 1.0, 0.0],
    ),
    "enzyme": (
        "Enzymes",
        "Enzymes are proteins that speed up chemical reactions inside living cells.",
        {"topic": "bio", "year": 2021, "tags": ["cells"]},
        [0.0, 0.0, 3.0],
    ),
    "orbit": (
        "Orbits",
        "A moon keeps its orbit because gravity bends its path around the planet.",
        {"topic": "space", "year": 2010},
        [ROOT2, ROOT2, 0.0],
    ),
}


def passage(pid: str, vector: list[float] | None = None, use_vector: bool = True) -> Passage:
    title, text, metadata, default = PASSAGES_BY_ID[pid]
    return Passage(
        id=pid,
        doc_id=f"doc-{pid}",
        chunk=0,
        text=text,
        source=f"corpus.jsonl:{list(PASSAGES_BY_ID).index(pid) + 1}",
        title=title,
        metadata=metadata,
        vector=(vector or default) if use_vector else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t", dims=3, model=EncoderRecord(name="hand-made")))
    results = list(backend.write(passage(pid) for pid in PASSAGES_BY_ID))
    assert [r.ok and r.created for r in results] == [True] * 4
    return backend


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def test_write_count_and_idempotence(store: LocalBackend) -> None:
    assert store.count() == 4
    again = list(store.write([passage("glacier"), passage("enzyme"), passage("enzyme")]))
    assert [(r.id, r.ok, r.created) for r in again] == [
        ("glacier", True, False),
        ("enzyme", True, False),
        ("enzyme", True, False),
    ]
    assert store.count() == 4


def test_duplicates_within_one_write_are_stored_once(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t"))
    results = list(backend.write([passage("orbit", use_vector=False), passage("orbit", use_vector=False)]))
    assert [r.created for r in results] == [True, False]
    assert backend.count() == 1


def test_a_new_instance_reopens_the_index(store: LocalBackend) -> None:
    reopened = LocalBackend(store.path)
    assert reopened.count() == 4
    assert reopened.info() == IndexInfo(
        backend="local",
        index=str(store.path),
        count=4,
        dims=3,
        model=EncoderRecord(name="hand-made"),
    )
    hit = reopened.search(SearchRequest(mode="bm25", text="glacier ice", k=1))[0]
    assert (hit.id, hit.doc_id, hit.title) == ("glacier", "doc-glacier", "Glaciers")
    assert hit.metadata == PASSAGES_BY_ID["glacier"][2]
    assert ids(reopened.search(SearchRequest(mode="dense", vector=[0, 0, 2], k=1))) == ["enzyme"]


def test_a_torn_last_record_is_ignored_and_cut_before_the_next_write(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t", dims=3))
    list(backend.write([passage("volcano"), passage("glacier")]))
    # A crash after the enzyme batch's vector reached the disk, with only part of its line written.
    with (backend.path / VECTORS).open("ab") as fh:
        fh.write(np.asarray([0.0, 0.0, 1.0], dtype=np.float32).tobytes())
    with (backend.path / PASSAGES).open("ab") as fh:
        fh.write(b'{"id": "enzyme", "doc_id": "doc-en')

    reopened = LocalBackend(backend.path)
    assert reopened.count() == 2
    assert [r.created for r in reopened.write([passage("orbit"), passage("enzyme")])] == [True, True]

    final = LocalBackend(backend.path)
    assert final.count() == 4
    lines = (backend.path / PASSAGES).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["volcano", "glacier", "orbit", "enzyme"]
    assert (backend.path / VECTORS).stat().st_size == 4 * 3 * 4
    assert ids(final.search(SearchRequest(mode="dense", vector=[1, 1, 0], k=1))) == ["orbit"]
    assert ids(final.search(SearchRequest(mode="dense", vector=[0, 0, 1], k=1))) == ["enzyme"]


def test_a_passage_whose_vector_never_reached_the_disk_is_dropped(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t", dims=3))
    list(backend.write([passage("volcano"), passage("glacier")]))
    os.truncate(backend.path / VECTORS, 3 * 4 + 5)  # glacier's vector lost mid-row

    reopened = LocalBackend(backend.path)
    assert reopened.count() == 1
    assert [r.created for r in reopened.write([passage("glacier")])] == [True]
    final = LocalBackend(backend.path)
    assert final.count() == 2
    assert (backend.path / VECTORS).stat().st_size == 2 * 3 * 4
    assert ids(final.search(SearchRequest(mode="dense", vector=[0, 1, 0], k=2))) == ["glacier", "volcano"]


def test_bm25_puts_the_relevant_passage_first(store: LocalBackend) -> None:
    hits = store.search(SearchRequest(mode="bm25", text="What happens in a volcanic eruption of lava?", k=10))
    assert ids(hits)[0] == "volcano"
    assert ids(store.search(SearchRequest(mode="bm25", text="proteins in cells", k=10))) == ["enzyme"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bm25_with_only_stop_words_or_unknown_words_finds_nothing(store: LocalBackend) -> None:
    assert store.search(SearchRequest(mode="bm25", text="the of and", k=5)) == []
    assert store.search(SearchRequest(mode="bm25", text="zeppelin", k=5)) == []


def test_title_boost_decides_between_title_and_text_matches(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t"))
    in_title = Passage("a", "a", 0, "Leaves turn sunlight into sugar.", "f:1", title="Photosynthesis")
    in_text = Passage("b", "b", 0, "Photosynthesis needs light, water and air.", "f:2", title="Plants")
    list(backend.write([in_title, in_text]))
    assert ids(backend.search(SearchRequest(mode="bm25", text="photosynthesis", title_boost=10))) == ["a", "b"]
    assert ids(backend.search(SearchRequest(mode="bm25", text="photosynthesis", title_boost=0.01))) == ["b", "a"]


def test_dense_ranks_by_cosine_with_elasticsearch_scores(store: LocalBackend) -> None:
    hits = store.search(SearchRequest(mode="dense", vector=[2.0, 0.2, 0.0], k=3))
    assert ids(hits) == ["volcano", "orbit", "glacier"]
    norm = math.sqrt(4.04)
    expected_cos = [2.0 / norm, (2.0 + 0.2) * ROOT2 / norm, 0.2 / norm]
    assert [h.score for h in hits] == pytest.approx([(1 + c) / 2 for c in expected_cos], abs=1e-6)
    # Stored vectors are normalised too: enzyme's (0, 0, 3) is at cosine 1 from (0, 0, 0.5).
    assert store.search(SearchRequest(mode="dense", vector=[0, 0, 0.5], k=1))[0].score == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["bm25", "dense"])
@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Filter("topic", "term", "geo"), {"volcano", "glacier"}),
        (Filter("tags", "term", "ice"), {"glacier"}),
        (Filter("topic", "terms", ["bio", "space"]), {"enzyme", "orbit"}),
        (Filter("year", "range", {"gte": 2015, "lt": 2021}), {"volcano", "glacier"}),
        (Filter("year", "range", {"gt": 2019}), {"enzyme"}),
        (Filter("year", "term", "2010"), {"orbit"}),
    ],
)
def test_filters_apply_in_both_modes(store: LocalBackend, mode: str, flt: Filter, expected: set[str]) -> None:
    # Every passage matches this query in both modes, so only the filter decides.
    request = SearchRequest(mode=mode, text="lava glacier enzymes moon", vector=[1, 1, 1], k=10, filters=[flt])
    assert set(ids(store.search(request))) == expected


@pytest.mark.parametrize("mode", ["bm25", "dense"])
def test_excluded_ids_are_never_returned(store: LocalBackend, mode: str) -> None:
    request = SearchRequest(mode=mode, text="lava volcano", vector=[1, 0, 0], k=2, exclude_ids=["volcano", "nope"])
    hits = store.search(request)
    assert "volcano" not in ids(hits)
    assert len(hits) == (2 if mode == "dense" else 0)


def test_bad_filters_are_refused(store: LocalBackend) -> None:
    with pytest.raises(StoreError, match="range filter on 'year'"):
        store.search(SearchRequest(mode="bm25", text="lava", filters=[Filter("year", "range", {"from": 1})]))


def test_search_many_equals_a_loop_of_search(store: LocalBackend) -> None:
    requests = [
        SearchRequest(mode="dense", vector=[0.1, 1.0, 0.0], k=2),
        SearchRequest(mode="bm25", text="moon gravity", k=2),
        SearchRequest(mode="dense", vector=[0.0, 0.3, 1.0], k=3, filters=[Filter("topic", "term", "geo")]),
    ]
    assert store.search_many(requests) == [store.search(r) for r in requests]


def test_missing_and_wrong_length_vectors_fail_per_item(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t", dims=3))
    results = list(
        backend.write(
            [
                passage("volcano"),
                passage("glacier", use_vector=False),
                passage("enzyme", vector=[1.0, 0.0]),
                passage("orbit"),
            ]
        )
    )
    assert [(r.id, r.ok) for r in results] == [
        ("volcano", True),
        ("glacier", False),
        ("enzyme", False),
        ("orbit", True),
    ]
    assert "no vector" in results[1].error and "3-dimensional" in results[1].error
    assert "2 dimensions" in results[2].error and "expects 3" in results[2].error
    assert results[2].source == "corpus.jsonl:3"
    assert LocalBackend(backend.path).count() == 2


def test_a_model_of_other_dims_is_refused(store: LocalBackend) -> None:
    with pytest.raises(StoreError, match=r"holds 3-dimensional vectors but the model gives 384"):
        LocalBackend(store.path).ensure_index(IndexSpec(name="t", dims=384))


def test_dense_search_needs_vectors_of_the_index_dims(tmp_path: Path, store: LocalBackend) -> None:
    with pytest.raises(StoreError, match=r"4 dimensions but local index .* holds 3"):
        store.search(SearchRequest(mode="dense", vector=[1, 0, 0, 0]))
    bm25_only = LocalBackend(tmp_path / "bm25")
    bm25_only.ensure_index(IndexSpec(name="t"))
    list(bm25_only.write([passage("orbit", use_vector=False)]))
    with pytest.raises(StoreError, match="has no vectors"):
        bm25_only.search(SearchRequest(mode="dense", vector=[1, 0, 0]))


def test_a_folder_without_an_index_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no local index at"):
        LocalBackend(tmp_path / "missing").count()


def test_threads_writing_at_once_store_each_passage_once(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "index")
    backend.ensure_index(IndexSpec(name="t"))
    # Four writers, each overlapping its neighbour by half: 0-599, 300-899, 600-1199, 900-1499.
    batches = [
        [Passage(f"p{i}", f"d{i}", 0, f"passage number {i}", f"f:{i}") for i in range(start, start + 600)]
        for start in range(0, 1200, 300)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for rs in pool.map(lambda b: list(backend.write(b)), batches) for r in rs]
    assert sum(r.created for r in results) == 1500
    lines = (backend.path / PASSAGES).read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(f"p{i}" for i in range(1500))
    assert LocalBackend(backend.path).count() == 1500
