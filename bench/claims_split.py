"""The claims split of ``bench/train_bench.py scifact`` as retrieval queries, so that a retriever tuned for the
claims classifier never sees the claims it is tested on:

  python -m bench.claims_split --out runs/claims-split

writes ``claims.{train,dev,test}.jsonl`` (the benchmark's seeded 60/20/20 split of ``claims.train.jsonl``), and the
BEIR queries and qrels of SciFact's training queries in two parts: ``tune.queries.jsonl`` / ``tune.qrels.tsv`` for
the classifier's train and dev claims (``ralm-es tune-retriever``), ``test.queries.jsonl`` / ``test.qrels.tsv`` for
its test claims (``ralm-es evaluate`` of each retriever on claims no retriever was tuned on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.train_bench import SHARED, split_claims


def claim_ids(path: Path) -> set[str]:
    return {str(json.loads(line)["id"]) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def write_queries(ids: set[str], source: Path, qrels: Path, out: Path, name: str) -> int:
    """The queries of ``source`` and the qrels rows whose query id is in ``ids``; the number of queries written."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if str(json.loads(line)["_id"]) in ids]
    (out / f"{name}.queries.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    header, *rows = qrels.read_text(encoding="utf-8").splitlines()
    judged = [row for row in rows if row.split("\t", 1)[0] in ids]
    (out / f"{name}.qrels.tsv").write_text("\n".join([header, *judged]) + "\n", encoding="utf-8")
    return len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the split's files")
    parser.add_argument("--seed", type=int, default=13, help="the split's seed (train_bench.py uses 13)")
    args = parser.parse_args()
    scifact = SHARED / "scifact"
    parts = {
        name: claim_ids(path)
        for name, path in split_claims(scifact / "claims.train.jsonl", args.out, args.seed).items()
    }
    queries, qrels = scifact / "queries.train.jsonl", scifact / "qrels" / "train.tsv"
    tune = write_queries(parts["train"] | parts["dev"], queries, qrels, args.out, "tune")
    test = write_queries(parts["test"], queries, qrels, args.out, "test")
    print(f"{args.out}: {tune} tuning queries (train + dev claims), {test} test queries")


if __name__ == "__main__":
    main()
