"""Document context as a retrieval source: the other sentences of a sentence's own document, nearest first, never
itself and never a label; an ordinary retrieval cache that training reads, alone or merged with retrieval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ralm_es.retrieve.cache import CacheHeader, CacheHit, CacheWriter, read_cache
from ralm_es.train.config import load_config
from ralm_es.train.loop import train
from tests.test_train import ner_config, write_conll

RALM = [sys.executable, "-m", "ralm_es.cli.main"]
DOC = """-DOCSTART- -X- -X- O

Alpha NNP B-NP B-PER
one CD I-NP O

Bravo NNP B-NP B-ORG
two CD I-NP O

Charlie NNP B-NP B-LOC
three CD I-NP O

Delta NNP B-NP B-MISC
four CD I-NP O

-DOCSTART- -X- -X- O

Echo NNP B-NP B-PER
five CD I-NP O
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_context_is_the_nearest_sentences_of_the_same_document(tmp_path: Path) -> None:
    data = tmp_path / "train.txt"
    data.write_text(DOC)
    out = tmp_path / "context.jsonl"
    proc = run_cli("doc-context", str(data), "-k", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    header, entries = read_cache(out)
    assert header.mode == "document-context" and header.k == 2
    third = entries["train-d0-s2"]
    # Distance 1 on both sides first (the earlier one first), never the sentence itself.
    assert [h.id for h in third.hits] == ["train-d0-s1", "train-d0-s3"]
    assert [h.text for h in third.hits] == ["Bravo two", "Delta four"]
    assert [h.id for h in entries["train-d0-s0"].hits] == ["train-d0-s1", "train-d0-s2"]
    # A document of one sentence has no context, and no other document's sentence stands in.
    assert entries["train-d1-s0"].hits == []
    texts = " ".join(h.text for e in entries.values() for h in e.hits)
    assert not any(tag in texts for tag in ("B-PER", "B-ORG", "NNP", "I-NP"))


def test_merge_puts_context_first_then_fills_from_retrieval(tmp_path: Path) -> None:
    data = tmp_path / "train.txt"
    data.write_text(DOC)
    retrieved = tmp_path / "retrieved.jsonl"
    with CacheWriter(retrieved, CacheHeader(index="corpus", mode="hybrid", k=2)) as writer:
        for sentence in ("d0-s0", "d0-s1", "d0-s2", "d0-s3", "d1-s0"):
            hits = [CacheHit(id=f"x-{sentence}-{i}", doc_id="x", rank=i, score=1.0, text=f"other {i}") for i in (1, 2)]
            writer.write(f"train-{sentence}", "q", hits)
    out = tmp_path / "merged.jsonl"
    proc = run_cli("doc-context", str(data), "-k", "3", "--with", str(retrieved), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    header, entries = read_cache(out)
    assert header.mode == "document-context+hybrid" and header.index == "corpus"
    assert [h.id for h in entries["train-d0-s0"].hits] == ["train-d0-s1", "train-d0-s2", "train-d0-s3"]
    assert [(h.id, h.rank) for h in entries["train-d1-s0"].hits] == [("x-d1-s0-1", 1), ("x-d1-s0-2", 2)]
    assert header.context is None

    # --context caps the context, so the retrieved hits get the slots the farther sentences had.
    capped = tmp_path / "capped.jsonl"
    proc = run_cli(
        "doc-context", str(data), "-k", "3", "--with", str(retrieved), "--context", "1", "--out", str(capped)
    )
    assert proc.returncode == 0, proc.stderr
    header, entries = read_cache(capped)
    assert header.context == 1 and header.k == 3
    assert [(h.id, h.rank) for h in entries["train-d0-s2"].hits] == [
        ("train-d0-s1", 1),
        ("x-d0-s2-1", 2),
        ("x-d0-s2-2", 3),
    ]
    none = run_cli("doc-context", str(data), "--context", "1", "--out", str(tmp_path / "alone.jsonl"))
    assert none.returncode == 2 and "--context" in none.stderr and "needs --with" in none.stderr


def test_a_retrieval_cache_without_the_input_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "train.txt"
    data.write_text(DOC)
    retrieved = tmp_path / "retrieved.jsonl"
    with CacheWriter(retrieved, CacheHeader(index="corpus", mode="hybrid", k=2)) as writer:
        writer.write("train-d0-s0", "q", [])
    proc = run_cli("doc-context", str(data), "--with", str(retrieved), "--out", str(tmp_path / "m.jsonl"))
    assert proc.returncode == 1 and "no retrieval for train-d0-s1" in proc.stderr and "Traceback" not in proc.stderr


def test_a_file_that_is_not_conll_is_refused_in_one_line_and_nothing_written(tmp_path: Path) -> None:
    claims = tmp_path / "claims.jsonl"
    claims.write_text('{"id": 1, "claim": "Alpha one."}\n{"id": 2, "claim": "Bravo two.", "label": "SUPPORT"}\n')
    out = tmp_path / "context.jsonl"
    proc = run_cli("doc-context", str(claims), "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"ralm-es: error: {claims} reads as jsonl, not CoNLL: document context needs a CoNLL file "
        "(a token and its tags a line, -DOCSTART- between documents)"
    )
    assert not out.exists()


def test_attention_trains_on_document_context(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = {
        "train": write_conll(tmp_path / "train.txt", 40, seed=3),
        "dev": write_conll(tmp_path / "dev.txt", 20, seed=4),
    }
    for split in ("train", "dev"):
        cache = tmp_path / f"{split}.context.jsonl"
        assert run_cli("doc-context", str(data[split]), "-k", "3", "--out", str(cache)).returncode == 0
        data[f"{split}_cache"] = cache
    result = train(load_config(ner_config(tmp_path, data, tiny_model_dir)))
    seen = [
        r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert result.finished and sum(seen[-3:]) / 3 < sum(seen[:3]) / 3


def test_out_is_written_afresh_for_each_input_and_only_a_context_cache_is_replaced(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(DOC)
    second.write_text(DOC.split("-DOCSTART- -X- -X- O\n\nEcho")[0])
    out = tmp_path / "context.jsonl"
    assert run_cli("doc-context", str(first), "--out", str(out)).returncode == 0
    # Another input to the same --out: its entries alone, counted as written (a's 5 stayed, "9 inputs" was printed).
    proc = run_cli("doc-context", str(second), "--out", str(out))
    assert proc.returncode == 0 and proc.stderr == f"4 inputs in {out}\n"
    assert list(read_cache(out)[1]) == ["b-d0-s0", "b-d0-s1", "b-d0-s2", "b-d0-s3"]
    # The same ids with a word changed: the new text, not the entries of before.
    second.write_text(second.read_text().replace("Bravo", "Zulu"))
    proc = run_cli("doc-context", str(second), "--out", str(out))
    assert proc.returncode == 0 and proc.stderr == f"4 inputs in {out}\n"
    assert [h.text for h in read_cache(out)[1]["b-d0-s0"].hits] == ["Zulu two", "Charlie three", "Delta four"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    # A cross-document cache took a cluster to make, and the input is no cache: neither is overwritten.
    retrieved = tmp_path / "retrieved.jsonl"
    with CacheWriter(retrieved, CacheHeader(index="corpus", mode="hybrid", k=2)) as writer:
        writer.write("b-d0-s0", "q", [])
    for target, reason in (
        (retrieved, "holds a hybrid retrieval cache, not document context"),
        (second, "is not a retrieval cache"),
    ):
        before = target.read_bytes()
        proc = run_cli("doc-context", str(second), "--out", str(target))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr == f"ralm-es: error: {target} {reason}; use a new --out or delete it\n"
        assert target.read_bytes() == before

    # A run that fails midway leaves the --out of before as it was.
    before = out.read_bytes()
    proc = run_cli("doc-context", str(second), "--with", str(retrieved), "--out", str(out))
    assert proc.returncode == 1 and "no retrieval for b-d0-s1" in proc.stderr
    assert out.read_bytes() == before and not (tmp_path / "context.jsonl.partial").exists()


def test_prose_is_refused_naming_its_first_line_and_tokens_alone_are_read(tmp_path: Path) -> None:
    out = tmp_path / "context.jsonl"
    # Prose was read as sentences of first words ("The A", "Birds"), exit 0; after a CoNLL sentence, as column errors.
    for name, text, line in (
        ("prose.txt", "The cat sat on mats.\nA dog ran in parks.\n\nBirds fly over the sea.\n", 1),
        ("mixed.txt", "-DOCSTART- -X- -X- O\n\nAlpha NNP B-NP B-PER\n\nThe cat sat on mats.\nA dog ran in parks.\n", 5),
    ):
        prose = tmp_path / name
        prose.write_text(text)
        proc = run_cli("doc-context", str(prose), "--out", str(out))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr == (
            f"ralm-es: error: {prose}:{line}: 'The cat sat on mats.' reads as prose, not a CoNLL line (a token, then "
            "its tags): document context needs a CoNLL file (a token and its tags a line, -DOCSTART- between "
            "documents)\n"
        )
        assert not out.exists()
    # No prose: tokens alone (as predict reads), a token and its POS tag without NER tags, BILOU tags. One sentence
    # a block, one document.
    for name, text in (
        ("tokens.txt", "Alpha\none\n\nBravo\ntwo\n"),
        ("pos.txt", "Alpha NNP\none CD\n\nBravo NNP\ntwo CD\n. .\n"),
        ("bilou.txt", "Alpha U-PER\none O\n\nBravo U-LOC\ntwo O\n"),
    ):
        conll = tmp_path / name
        conll.write_text(text)
        proc = run_cli("doc-context", str(conll), "--out", str(out))
        assert proc.returncode == 0 and proc.stderr == f"2 inputs in {out}\n"
        assert [h.text for h in read_cache(out)[1][f"{conll.stem}-d0-s0"].hits] == [
            "Bravo two" + " ." * (name == "pos.txt")
        ]


def test_a_file_without_sentences_is_refused(tmp_path: Path) -> None:
    for name, text in (("empty.txt", ""), ("starts.txt", "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n\n")):
        data = tmp_path / name
        data.write_text(text)
        out = tmp_path / f"{name}.jsonl"
        proc = run_cli("doc-context", str(data), "--out", str(out))
        assert proc.returncode == 1 and not out.exists()
        assert proc.stderr == (
            f"ralm-es: error: {data} holds no sentence: document context needs a CoNLL file (a token and its tags "
            "a line, -DOCSTART- between documents)\n"
        )
