"""The claims split of ``bench/train_bench.py scifact`` as retrieval queries, so that a retriever tuned for the
claims classifier never sees the claims it is tested on:

  python -m bench.claims_split --out runs/claims-split

writes ``claims.{train,dev,test}.jsonl`` (the benchmark's seeded 60/20/20 split of ``claims.train.jsonl``), and the
BEIR queries and qrels of SciFact's training queries in two parts: ``tune.queries.jsonl`` / ``tune.qrels.tsv`` for
the classifier's train and dev claims (``ralm-es tune-retriever``), ``test.queries.jsonl`` / ``test.qrels.tsv`` for
its test claims (``ralm-es evaluate`` of each retriever on claims no retriever was tuned on).

``--tune-on evidence`` judges a tuning claim's evidence abstracts only (its ``evidence`` field), so a
NOT_ENOUGH_INFO claim, whose cited abstract neither supports nor contradicts it, is not tuned on: the retriever
learns to find evidence, not whatever a claim cites. The test qrels stay BEIR's in both cases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import read_jsonl, write_qrels
from bench.train_bench import SHARED, split_claims


def claim_ids(path: Path) -> set[str]:
    return {str(json.loads(line)["id"]) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def write_queries(ids: set[str], source: Path, qrels: Path, out: Path, name: str) -> int:
    """The qrels rows whose query id is in ``ids`` and the queries of ``source`` they judge; the number of queries
    written."""
    header, *rows = qrels.read_text(encoding="utf-8").splitlines()
    judged = [row for row in rows if row.split("\t", 1)[0] in ids]
    (out / f"{name}.qrels.tsv").write_text("\n".join([header, *judged]) + "\n", encoding="utf-8")
    wanted = {row.split("\t", 1)[0] for row in judged}
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if str(json.loads(line)["_id"]) in wanted]
    (out / f"{name}.queries.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return len(kept)


def evidence_qrels(claims: Path, out: Path) -> Path:
    """A BEIR qrels TSV in ``out`` judging each claim's evidence abstracts relevant; claims without evidence have
    no row."""
    path = out / "evidence.qrels.tsv"
    write_qrels(path, ((str(claim["id"]), doc) for claim in read_jsonl(claims) for doc in claim["evidence"]))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the split's files")
    parser.add_argument("--seed", type=int, default=13, help="the split's seed (train_bench.py uses 13)")
    parser.add_argument(
        "--tune-on",
        choices=("cited", "evidence"),
        default="cited",
        help="tuning qrels: BEIR's (the abstracts a claim cites) or the claims' evidence abstracts",
    )
    args = parser.parse_args()
    scifact = SHARED / "scifact"
    parts = {
        name: claim_ids(path)
        for name, path in split_claims(scifact / "claims.train.jsonl", args.out, args.seed).items()
    }
    queries, qrels = scifact / "queries.train.jsonl", scifact / "qrels" / "train.tsv"
    judged = evidence_qrels(scifact / "claims.train.jsonl", args.out) if args.tune_on == "evidence" else qrels
    tune = write_queries(parts["train"] | parts["dev"], queries, judged, args.out, "tune")
    test = write_queries(parts["test"], queries, qrels, args.out, "test")
    print(f"{args.out}: {tune} tuning queries (train + dev claims), {test} test queries")


if __name__ == "__main__":
    main()
