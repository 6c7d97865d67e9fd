"""Chunking by the embedding tokenizer's budget: limits, overlap, offsets, deterministic ids."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from tokenizers import Tokenizer

from ralm_es.corpus.chunking import Chunker, ChunkingError, chunk_record
from ralm_es.corpus.types import Record
from ralm_es.model_folder import default_model_path, load_tokenizer

MAX_TOKENS = 48
OVERLAP = 8
WORDS = ("protein", "cell", "insulin", "glucose", "receptor", "kinase", "membrane", "signalling", "phosphorylation")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer(default_model_path())


def prose(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(sentences)
    )


def record(text: str, rid: str = "doc1") -> Record:
    return Record(id=rid, text=text, source="corpus.jsonl:3", title="A title", metadata={"year": 2020})


def token_count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=True).ids)


def test_long_record_is_cut_within_budget_with_overlap(tokenizer: Tokenizer) -> None:
    text = prose(1, 40)
    passages = Chunker(tokenizer, MAX_TOKENS, OVERLAP).chunk(record(text))
    assert len(passages) > 3
    for p in passages:
        assert token_count(tokenizer, p.text) <= MAX_TOKENS
        assert text[p.start : p.end] == p.text
    for before, after in pairwise(passages):
        assert after.start < before.end, "consecutive passages share text"
        assert before.start < after.start
    assert passages[0].start == 0 and passages[-1].end == len(text)
    # Every sentence is a boundary candidate here, so windows other than the last end on a full stop.
    assert all(p.text.endswith(".") for p in passages)


def test_passage_fields_and_ids(tokenizer: Tokenizer) -> None:
    rec = record(prose(2, 30))
    passages = chunk_record(rec, tokenizer, MAX_TOKENS, OVERLAP)
    assert [p.id for p in passages] == [f"doc1#{i}" for i in range(len(passages))]
    assert [p.chunk for p in passages] == list(range(len(passages)))
    assert all(
        (p.doc_id, p.title, p.source, p.metadata) == ("doc1", "A title", "corpus.jsonl:3", {"year": 2020})
        for p in passages
    )
    assert all("A title" not in p.text for p in passages)
    assert chunk_record(rec, tokenizer, MAX_TOKENS, OVERLAP) == passages


def test_short_record_is_one_passage(tokenizer: Tokenizer) -> None:
    text = "  Insulin lowers blood glucose.  "
    (passage,) = chunk_record(record(text), tokenizer, MAX_TOKENS, OVERLAP)
    assert (passage.id, passage.chunk, passage.text, passage.start, passage.end) == ("doc1#0", 0, text, 0, len(text))


def test_budget_counts_special_tokens(tokenizer: Tokenizer) -> None:
    words = ["word"] * (MAX_TOKENS - 1)
    exact = " ".join(words[: MAX_TOKENS - tokenizer.post_processor.num_special_tokens_to_add(False)])
    assert len(chunk_record(record(exact), tokenizer, MAX_TOKENS, OVERLAP)) == 1
    assert len(chunk_record(record(exact + " word"), tokenizer, MAX_TOKENS, OVERLAP)) == 2


def test_batched_chunking_matches_one_by_one(tokenizer: Tokenizer) -> None:
    records = [record(prose(seed, seed % 7 + 1), f"d{seed}") for seed in range(25)]
    chunker = Chunker(tokenizer, MAX_TOKENS, OVERLAP)
    batched = list(chunker.chunk_many(records, batch_size=4))
    assert batched == [p for r in records for p in chunker.chunk(r)]
    assert len({p.id for p in batched}) == len(batched)


def test_words_longer_than_half_a_window_are_cut_and_chunking_ends(tokenizer: Tokenizer) -> None:
    rng = random.Random(3)
    text = " ".join("".join(rng.choice("bcdfgkpqxz") for _ in range(99)) for _ in range(10))
    total = len(tokenizer.encode(text, add_special_tokens=False).ids)
    budget = MAX_TOKENS - tokenizer.post_processor.num_special_tokens_to_add(False)
    passages = chunk_record(record(text), tokenizer, MAX_TOKENS, OVERLAP)
    assert total > 10 * budget // 2, "each word is over half a window"
    assert all(text[p.start : p.end] == p.text for p in passages)
    assert passages[0].start == 0 and passages[-1].end == len(text)
    assert all(not text[before.end : after.start].strip() for before, after in pairwise(passages))
    assert len(passages) <= total // (budget - OVERLAP) + 1


@pytest.mark.parametrize(("max_tokens", "overlap"), [(2, 0), (48, 40), (48, -1)])
def test_impossible_settings_are_errors(tokenizer: Tokenizer, max_tokens: int, overlap: int) -> None:
    with pytest.raises(ChunkingError):
        Chunker(tokenizer, max_tokens, overlap)
