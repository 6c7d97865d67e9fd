"""Cutting records into passages that fit the embedding tokenizer's budget, with overlap, on token boundaries
(preferring sentence, then word boundaries), keeping character offsets into the original text."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from tokenizers import Tokenizer

from ralm_es.corpus.types import Passage, Record
from ralm_es.errors import RalmError

SENTENCE_ENDS = frozenset(".!?;。！？")
DEFAULT_BATCH = 256


class ChunkingError(RalmError):
    """A chunking setting that cannot work with the tokenizer (budget, overlap)."""


def passage_id(doc_id: str, chunk: int) -> str:
    return f"{doc_id}#{chunk}"


class Chunker:
    """Splits records into passages of at most ``max_tokens`` tokens *including* the tokenizer's special tokens,
    consecutive passages sharing about ``overlap`` tokens. Titles are never prepended (they stay a field).

    Cuts fall on word boundaries, where re-tokenizing a passage gives back the same tokens. Only a single word
    longer than half a window is cut inside, and then its re-tokenized pieces may differ slightly in number.

    ``tokenizer`` is the ``tokenizers`` library's (``model_folder.load_tokenizer``): character offsets and word ids
    without transformers or torch, so a BM25-only ingest stays light."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = 256, overlap: int = 32) -> None:
        self.tokenizer = tokenizer
        processor = tokenizer.post_processor
        self.budget = max_tokens - (processor.num_special_tokens_to_add(False) if processor else 0)
        if self.budget < 2:
            raise ChunkingError(f"max_tokens={max_tokens} leaves no room for text after the special tokens")
        if not 0 <= overlap < self.budget // 2:
            raise ChunkingError(f"overlap={overlap} must be at least 0 and under half the text budget ({self.budget})")
        self.overlap = overlap

    def chunk(self, record: Record) -> list[Passage]:
        return list(self.chunk_many([record]))

    def chunk_many(self, records: Iterable[Record], batch_size: int = DEFAULT_BATCH) -> Iterator[Passage]:
        """Passages of every record, in order; the tokenizer runs once per ``batch_size`` records."""
        it = iter(records)
        while batch := list(islice(it, batch_size)):
            encoded = self.tokenizer.encode_batch([r.text for r in batch], add_special_tokens=False)
            for record, encoding in zip(batch, encoded, strict=True):
                offsets = encoding.offsets
                if len(offsets) <= self.budget:
                    yield _passage(record, 0, 0, len(record.text))
                    continue
                spans = self._spans(record.text, offsets, encoding.word_ids)
                yield from (_passage(record, n, start, end) for n, (start, end) in enumerate(spans))

    def _spans(
        self, text: str, offsets: Sequence[tuple[int, int]], words: Sequence[int | None]
    ) -> list[tuple[int, int]]:
        """Character spans of the windows over a token sequence longer than the budget."""
        spans: list[tuple[int, int]] = []
        first = 0
        while True:
            last = min(first + self.budget, len(offsets))
            if last < len(offsets):
                last = self._cut(text, offsets, words, first, last)
            start, end = offsets[first][0], offsets[last - 1][1]
            spans.append((start, end))
            if last == len(offsets):
                return spans
            # Start the next window at a word start, so it does not open mid-word ("##ing"); moving forward (not
            # back) keeps the step at least half a window minus the overlap, however long a word is.
            first = last - self.overlap
            while first < last and words[first] == words[first - 1]:
                first += 1

    def _cut(
        self, text: str, offsets: Sequence[tuple[int, int]], words: Sequence[int | None], first: int, last: int
    ) -> int:
        """The exclusive end token of a window ``[first, last)``: the last sentence end in its back half, else the
        last word boundary there, else ``last``."""
        floor = first + (last - first) // 2
        word_cut = None
        for k in range(last, floor, -1):
            prev_start, prev_end = offsets[k - 1]
            if text[prev_start:prev_end] in SENTENCE_ENDS or "\n" in text[prev_end : offsets[k][0]]:
                return k
            if word_cut is None and words[k] != words[k - 1]:
                word_cut = k
        return word_cut or last


def _passage(record: Record, chunk: int, start: int, end: int) -> Passage:
    return Passage(
        id=passage_id(record.id, chunk),
        doc_id=record.id,
        chunk=chunk,
        text=record.text[start:end],
        source=record.source,
        title=record.title,
        start=start,
        end=end,
        metadata=dict(record.metadata),
    )


def chunk_record(record: Record, tokenizer: Tokenizer, max_tokens: int = 256, overlap: int = 32) -> list[Passage]:
    """The passages of one record; for a whole corpus build one ``Chunker`` and call ``chunk_many``."""
    return Chunker(tokenizer, max_tokens, overlap).chunk(record)
