"""Tuning data for the CoNLL retriever from the unlabeled training text alone: CoNLL has no relevance judgements, but
a news story's sentences are about the same things, so the sentences next to a sentence in its own document are
judged relevant to it. A retriever tuned on such pairs learns what makes two sentences belong to one story (shared
names, the same event), which cross-document retrieval (``--exclude doc+content``) then finds in other stories.

  python -m bench.conll_pairs --out runs/conll-pairs

writes ``queries.jsonl`` (a seeded sample of the training sentences), ``qrels.tsv`` (the sentences of each query's
document at most ``--window`` sentences away) and ``corpus.jsonl`` (every training sentence that is not a query) for
``ralm-es tune-retriever``. The queries are kept out of the corpus, so no sentence is ranked against itself, and no
label is read (the CoNLL reader drops the tags).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from bench.common import write_qrels
from bench.train_bench import SHARED
from ralm_es.corpus.readers import ReadOptions, read_corpus
from ralm_es.corpus.types import Record


def sentences(path: Path) -> list[Record]:
    return [r for r in read_corpus(path, ReadOptions(format="conll")) if isinstance(r, Record)]


def story_pairs(
    records: list[Record], queries: int, window: int, min_words: int, seed: int
) -> tuple[list[Record], dict[str, list[str]], list[Record]]:
    """A seeded sample of ``queries`` sentences of at least ``min_words`` words, each with the sentences of its
    document at most ``window`` away that are not queries themselves; the rest of the sentences as the corpus. A
    query with no such neighbour is dropped."""
    eligible = [r for r in records if len(r.text.split()) >= min_words]
    chosen = {r.id for r in random.Random(seed).sample(eligible, min(queries, len(eligible)))}
    by_doc: dict[object, list[Record]] = {}
    for r in records:
        by_doc.setdefault(r.metadata["doc_id"], []).append(r)
    qrels: dict[str, list[str]] = {}
    for r in records:
        if r.id not in chosen:
            continue
        near = [
            s.id
            for s in by_doc[r.metadata["doc_id"]]
            if s.id not in chosen and 0 < abs(s.metadata["sentence"] - r.metadata["sentence"]) <= window
        ]
        if near:
            qrels[r.id] = near
    kept = [r for r in records if r.id in qrels]
    corpus = [r for r in records if r.id not in chosen]
    return kept, qrels, corpus


def write_jsonl(records: list[Record], path: Path) -> None:
    path.write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in records), encoding="utf-8")


def write_pairs(out: Path, queries: list[Record], qrels: dict[str, list[str]], corpus: list[Record]) -> int:
    """The three files of ``ralm-es tune-retriever`` in ``out``; the number of judged pairs."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(queries, out / "queries.jsonl")
    write_jsonl(corpus, out / "corpus.jsonl")
    return write_qrels(out / "qrels.tsv", ((q, d) for q, docs in qrels.items() for d in docs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the three files")
    parser.add_argument("--train", type=Path, default=SHARED / "conll2003" / "train.txt", help="CoNLL training file")
    parser.add_argument("--queries", type=int, default=3000, help="sentences sampled as queries")
    # Each judged pair is a training pair, and pairs of one query never share a batch: a whole story judged
    # relevant makes many small batches.
    parser.add_argument("--window", type=int, default=2, help="neighbours within this many sentences are relevant")
    parser.add_argument("--min-words", type=int, default=4, help="shorter sentences are never queries")
    parser.add_argument("--seed", type=int, default=13, help="the sample's seed")
    args = parser.parse_args()
    queries, qrels, corpus = story_pairs(sentences(args.train), args.queries, args.window, args.min_words, args.seed)
    pairs = write_pairs(args.out, queries, qrels, corpus)
    print(f"{args.out}: {len(queries)} queries, {pairs} judged pairs, {len(corpus)} corpus sentences")


if __name__ == "__main__":
    main()
