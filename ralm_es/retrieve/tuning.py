"""Fine-tuning the dense retriever's encoder on a task's own relevance judgements (sentence-transformers).

Training pairs are (query, relevant document) from BEIR queries and qrels; the loss is
MultipleNegativesRankingLoss (CachedMultipleNegativesRankingLoss, GradCache, with ``mini_batch``, for memory that
does not grow with the batch): every other document in the batch is a negative, plus one hard negative a pair
drawn each epoch from the query's top BM25 hits that are not judged relevant. A seeded share of the training
*queries* is held out as a dev split and never trained on. Dev nDCG@10 (ranx) is measured before training and
after every epoch, by exact cosine ranking of each dev query's candidates (its relevant documents plus its BM25
top ``dev_candidates``, or the whole corpus when that is 0); the best epoch is kept and training stops after
``patience`` epochs without a gain. The output is a sentence-transformers folder that
:class:`ralm_es.embed.Encoder` loads, with ``tuning.json`` recording how it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ralm_es import resumable
from ralm_es.corpus.lines import iter_lines
from ralm_es.corpus.readers import read_corpus
from ralm_es.corpus.types import Passage, ReadError
from ralm_es.embed import Encoder, pick_device
from ralm_es.inference.checkpoint import read_safetensors
from ralm_es.retrieve.metrics import (
    MAX_QRELS_LINE,
    evaluate_run,
    load_qrels,
    passages_to_docs,
    relevant_judgements,
    split_queries,
)
from ralm_es.retrieve.settings import TuneSettings, TuningError
from ralm_es.store.base import Backend, EncoderRecord, IndexSpec, SearchRequest

FORMAT = "ralm-es-tuned-encoder"
VERSION = 1
MINE_BATCH = 256
# How often, in seconds of training, a tuning run saves its state for --resume.
SAVE_SECONDS = 300.0


@dataclass(frozen=True)
class TuningData:
    """Queries with a relevant judgement, their judgements, and the corpus texts (what the encoder embeds)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    docs: dict[str, str]
    sources: dict[str, str]

    def digest(self) -> str:
        return content_digest(self.queries, self.qrels, self.docs)


def content_digest(*parts: Mapping[str, Any]) -> str:
    """What a run reads, not where from: a resume finds the same data under another spelling of its path, and
    notices an edited file (or index) behind the same name. Item by item, so a large corpus is not copied whole."""
    digest = hashlib.sha256()
    for part in parts:
        for key in sorted(part):
            item = json.dumps([key, part[key]], sort_keys=True, ensure_ascii=False)
            digest.update(item.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")  # JSON escapes a NUL, so this parts the mappings unambiguously
    return digest.hexdigest()


def _read_texts(path: str | Path, what: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for item in read_corpus(path):
        if isinstance(item, ReadError):
            raise TuningError(f"{item.source}: {item.reason} ({what})")
        texts[item.id] = item.text
    if not texts:
        raise TuningError(f"{path}: no {what}")
    return texts


def _qrels_line(path: Path, qid: str, doc_id: str) -> int:
    # Lines as load_qrels read them (gzip, BOM).
    return next(line.number for line in iter_lines(path, MAX_QRELS_LINE) if line.text.split()[:2] == [qid, doc_id])


def load_data(queries: str | Path, qrels: str | Path, corpus: str | Path) -> TuningData:
    """Read and cross-check the three files: a judged relevant document missing from the corpus is an error that
    names its qrels line; queries without a relevant judgement (and judgements of queries not given) are left out."""
    texts = _read_texts(queries, "queries")
    docs = _read_texts(corpus, "corpus documents")
    relevant = {q: judged for q, judged in relevant_judgements(load_qrels(qrels)).items() if q in texts}
    for qid, judged in relevant.items():
        missing = next((d for d, r in judged.items() if r > 0 and d not in docs), None)
        if missing is not None:
            line = _qrels_line(Path(qrels), qid, missing)
            raise TuningError(f"{qrels}:{line}: document '{missing}' is not in the corpus {corpus}")
    used = {q: texts[q] for q in sorted(relevant)}
    if len(used) < 2:
        raise TuningError(f"{len(used)} of the queries in {queries} have a relevant judgement in {qrels}; need 2+")
    return TuningData(
        queries=used,
        # A judgement of a document the corpus lacks can only be a not-relevant one (checked above): nothing to rank.
        qrels={q: {d: r for d, r in relevant[q].items() if d in docs} for q in used},
        docs=docs,
        sources={"queries": str(queries), "qrels": str(qrels), "corpus": str(corpus)},
    )


def mine_bm25(backend: Backend, queries: Mapping[str, str], depth: int, progress: bool = False) -> dict[str, list[str]]:
    """Each query's BM25 documents, best first (passages folded into their documents, best passage wins)."""
    ids = list(queries)
    ranked: dict[str, list[str]] = {}
    with tqdm(total=len(ids), desc="bm25", unit="query", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(ids), MINE_BATCH):
            chunk = ids[start : start + MINE_BATCH]
            requests = [SearchRequest(mode="bm25", text=queries[q], k=depth) for q in chunk]
            for qid, hits in zip(chunk, backend.search_many(requests), strict=True):
                scores = passages_to_docs(hits)
                ranked[qid] = sorted(scores, key=lambda d: -scores[d])
            bar.update(len(chunk))
    return ranked


@contextmanager
def memory_bm25(docs: Mapping[str, str]) -> Iterator[Backend]:
    """A throwaway BM25-only local index of the corpus (one passage a document), for when no index is given."""
    from ralm_es.store.local import LocalBackend

    with tempfile.TemporaryDirectory(prefix="ralm-es-tune-") as folder:
        backend = LocalBackend(Path(folder) / "bm25")
        backend.ensure_index(IndexSpec(name="tune-bm25"))
        passages = (Passage(id=d, doc_id=d, chunk=0, text=t, source=d) for d, t in docs.items())
        failed = [r for r in backend.write(passages) if not r.ok]
        if failed:
            raise TuningError(f"corpus document '{failed[0].id}' cannot be indexed for BM25: {failed[0].error}")
        yield backend


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negative: str | None


def training_pairs(
    data: TuningData, train: Sequence[str], ranked: Mapping[str, list[str]], depth: int, rng: random.Random
) -> list[Pair]:
    """One pair per (train query, relevant document), each with a hard negative drawn from the query's top
    ``depth`` unjudged BM25 documents when ``ranked`` has any (a fresh draw every epoch). A document judged not
    relevant (relevance 0) is no positive. A query BM25 found no unjudged document for draws any unjudged one: a
    batch trains on hard negatives only when every pair has one."""
    pairs = []
    for qid in train:
        pool = [d for d in ranked.get(qid, []) if d not in data.qrels[qid]][:depth]
        if ranked and not pool:
            pool = [d for d in data.docs if d not in data.qrels[qid]]
        for doc in sorted(d for d, r in data.qrels[qid].items() if r > 0):
            pairs.append(Pair(qid, doc, rng.choice(pool) if pool else None))
    return pairs


def batches(
    pairs: Sequence[Pair], size: int, qrels: Mapping[str, Mapping[str, int]], rng: random.Random
) -> list[list[Pair]]:
    """Shuffled batches in which no document is relevant to another pair's query and no document appears twice:
    in-batch negatives are then true negatives. A pair that does not fit waits for a later batch."""
    order = list(pairs)
    rng.shuffle(order)
    out: list[list[Pair]] = []
    while order:
        batch: list[Pair] = []
        docs: set[str] = set()
        judged: set[str] = set()
        rest = []
        for p in order:
            mine = {p.positive} | ({p.negative} if p.negative else set())
            if len(batch) < size and not mine & (docs | judged) and not docs & set(qrels[p.query]):
                batch.append(p)
                docs |= mine
                judged |= set(qrels[p.query])
            else:
                rest.append(p)
        out.append(batch)
        order = rest
    return out


def dev_candidates(
    data: TuningData, dev: Sequence[str], ranked: Mapping[str, list[str]], depth: int
) -> dict[str, list[str]]:
    """Each dev query's documents to rank: its relevant ones plus its BM25 top ``depth``; all of them for 0."""
    if depth == 0:
        everything = list(data.docs)
        return {q: everything for q in dev}
    return {q: sorted(set(data.qrels[q]) | set(ranked.get(q, [])[:depth])) for q in dev}


@dataclass
class EpochResult:
    """Dev metrics after ``epoch`` epochs (0: the base encoder), that epoch's mean training loss, and the seconds
    its training and dev evaluation took."""

    epoch: int
    dev: dict[str, float]
    loss: float | None = None
    seconds: float = 0.0


@dataclass
class TuneReport:
    out: Path
    base: EncoderRecord
    revision: str
    train_queries: int
    dev_queries: int
    pairs: int
    negatives: str
    dev_evaluation: str
    best_epoch: int
    history: list[EpochResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def before(self) -> dict[str, float]:
        return self.history[0].dev

    @property
    def after(self) -> dict[str, float]:
        return next(h.dev for h in self.history if h.epoch == self.best_epoch)


Notice = Callable[[str], None]


class Tuner:
    """Fine-tunes ``base`` (an encoder folder; ``None``: the packaged default) on ``data``."""

    def __init__(self, base: str | Path | None, settings: TuneSettings, progress: bool = False) -> None:
        self.s = settings
        self.progress = progress
        self.base = Encoder(base, device="cpu")  # checks the folder, and names its weights by their hash
        self.device = pick_device(settings.device)
        positions = getattr(self.base.config, "max_position_embeddings", None)
        # Before the corpus is mined and the base encoder evaluated, not as a tensor-size traceback after.
        if isinstance(positions, int) and settings.max_length > positions:
            raise TuningError(
                f"tune.max_length {settings.max_length} is more than the {positions} tokens the encoder in "
                f"{self.base.path} reads"
            )

    def _model(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(str(self.base.path), device=str(self.device), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TuningError(f"sentence-transformers cannot load {self.base.path}: {exc}") from None
        model.max_seq_length = self.s.max_length
        return model

    def _evaluate(
        self, model: Any, data: TuningData, candidates: Mapping[str, list[str]], dev_qrels: Mapping[str, Any]
    ) -> dict[str, float]:
        model.eval()
        pool = sorted({d for docs in candidates.values() for d in docs})
        row = {d: i for i, d in enumerate(pool)}
        qids = list(candidates)
        encode = lambda texts: model.encode(  # noqa: E731
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=self.progress
        )
        doc_vectors = encode([data.docs[d] for d in pool])
        query_vectors = encode([data.queries[q] for q in qids])
        run = {}
        for qid, vector in zip(qids, query_vectors, strict=True):
            docs = candidates[qid]
            scores = doc_vectors[[row[d] for d in docs]] @ vector
            run[qid] = {d: float(s) for d, s in zip(docs, scores, strict=True)}
        metrics = evaluate_run(run, dev_qrels)
        return {name: float(value) for name, value in metrics.items() if name != "queries"}

    def _epoch(
        self,
        model: Any,
        loss_fn: Any,
        optimizer: Any,
        scheduler: Any,
        plan: list[list[Pair]],
        data: TuningData,
        epoch: int,
        losses: list[float],
        save: Callable[[], None],
        stop_at: int | None,
    ) -> bool:
        """Train ``plan`` from batch ``len(losses)`` on, appending each batch's loss; ``save`` every
        ``SAVE_SECONDS``. False when it stopped at batch ``stop_at`` before the end of the plan."""
        from sentence_transformers.util import batch_to_device

        model.train()
        saved = time.monotonic()
        bar = tqdm(
            total=len(plan),
            initial=len(losses),
            desc=f"epoch {epoch}",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        with bar:
            for batch in plan[len(losses) :]:
                if stop_at is not None and len(losses) >= stop_at:
                    return False
                columns = [[data.queries[p.query] for p in batch], [data.docs[p.positive] for p in batch]]
                if all(p.negative for p in batch):
                    columns.append([data.docs[p.negative] for p in batch if p.negative])
                features = [batch_to_device(model.preprocess(texts), self.device) for texts in columns]
                loss = loss_fn(features, torch.zeros(len(batch), device=self.device))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if time.monotonic() - saved >= SAVE_SECONDS:
                    save()
                    saved = time.monotonic()
        return True

    def run(
        self,
        data: TuningData,
        out: str | Path,
        miner: Backend | None,
        negatives: str,
        notice: Notice,
        resume: bool = False,
        stop_after: int | None = None,
    ) -> TuneReport | None:
        """Tune, keep the best epoch, write it to ``out`` (a new folder). ``miner`` gives the BM25 rankings for
        hard negatives and dev candidates (``None``: in-batch negatives only, dev ranks the whole corpus).

        The run keeps its state in ``OUT.tuning/`` (after the base evaluation, every ``SAVE_SECONDS`` of training
        and after every epoch), removed once the encoder is written; ``resume`` continues from it.
        ``stop_after`` ends this call after that many training batches, with the state saved; it then returns
        ``None``."""
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
        from transformers import get_linear_schedule_with_warmup

        out = Path(out)
        state = state_folder(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise TuningError(f"--out {out} already exists and is not an empty folder")
        if resume and resumable.saved_loop(state) is None:
            raise TuningError(f"--resume: {state} holds no unfinished tuning run")
        if not resume and state.exists():
            raise TuningError(
                f"{state} holds an unfinished tuning run for --out {out}: pass --resume to continue it, or delete "
                "that folder to start over"
            )
        started = time.monotonic()
        rng = random.Random(self.s.seed)
        torch.manual_seed(self.s.seed)
        train, dev = split_queries(list(data.queries), self.s.dev_fraction, self.s.seed)
        depth = self.s.dev_candidates if miner is not None else 0
        ranked: dict[str, list[str]] = {}
        if miner is not None:
            wanted = {q: data.queries[q] for q in (train if self.s.hard_negatives else []) + dev}
            ranked = mine_bm25(miner, wanted, max(self.s.negative_depth, depth), self.progress)
            known = sum(d in data.docs for docs in ranked.values() for d in docs)
            found = sum(len(docs) for docs in ranked.values())
            if found and known < found / 2:
                raise TuningError(
                    f"only {known} of the {found} documents BM25 found in {miner.index} are in the corpus "
                    f"{data.sources['corpus']}: the index does not hold this corpus"
                )
            ranked = {q: [d for d in docs if d in data.docs] for q, docs in ranked.items()}
        mined = ranked if self.s.hard_negatives else {}
        candidates = dev_candidates(data, dev, ranked, depth)
        dev_qrels = {q: data.qrels[q] for q in dev}
        described = (
            "the whole corpus"
            if depth == 0
            else f"each dev query's relevant documents plus its BM25 top {depth} ({negatives})"
        )
        notice(f"{len(train)} training and {len(dev)} dev queries (seed {self.s.seed}); dev ranks {described}")

        model = self._model()
        loss_fn = (
            CachedMultipleNegativesRankingLoss(model, mini_batch_size=self.s.mini_batch)
            if self.s.mini_batch
            else MultipleNegativesRankingLoss(model)
        )
        # Every epoch's batches come from the seeded rng up front: a resumed run draws the same ones.
        plans = []
        for _ in range(self.s.epochs):
            pairs = training_pairs(data, train, mined, self.s.negative_depth, rng)
            plans.append(batches(pairs, self.s.batch_size, data.qrels, rng))
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.s.lr)
        total = sum(len(p) for p in plans)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.s.warmup * total), total)

        # The device is where the run goes on, not what it computes: a run may resume on another machine.
        settings = {k: v for k, v in asdict(self.s).items() if k != "device"}
        made_of = {
            "settings": settings,
            "base": self.base.revision,
            "data": data.digest(),
            "BM25 rankings": content_digest(ranked),
        }
        if resume:
            loop = resumable.load_state(state, model, optimizer, scheduler, self.device)
            if loop["made_of"] != made_of:
                raise TuningError(
                    f"--resume: {state} is a tuning run with {_changes(loop['made_of'], made_of)}; delete it to "
                    "start over"
                )
            history = [EpochResult(**h) for h in loop["history"]]
            best_state = _read_best(state, loop["best_epoch"])
            notice(f"resuming epoch {loop['epoch']} at batch {len(loop['losses'])} from {state}")
        else:
            tick = time.monotonic()
            history = [EpochResult(0, self._evaluate(model, data, candidates, dev_qrels))]
            history[0].seconds = time.monotonic() - tick
            notice(f"base encoder: dev nDCG@10 {history[0].dev['ndcg@10']:.4f}")
            loop = {"made_of": made_of, "epoch": 1, "losses": [], "best_epoch": 0, "stopped": False, "seconds": 0.0}
            best_state = _snapshot(model)
        # Seconds spent by the calls before this one, for a run resumed across them.
        earlier = loop["seconds"]
        # When the current epoch began, moved back by the time earlier calls spent in it (resumed mid-epoch).
        tick = time.monotonic()

        def save() -> None:
            now = time.monotonic()
            loop.update(history=[asdict(h) for h in history], seconds=earlier + now - started, epoch_seconds=now - tick)
            best = _write_best(state, loop["best_epoch"], best_state)
            resumable.save_state(state, model, optimizer, scheduler, loop)
            # Only once the saved state names the new best file.
            for older in state.glob("best-*.safetensors"):
                if older != best:
                    older.unlink()

        if not resume:
            save()
        batches_left = stop_after
        while loop["epoch"] <= len(plans) and not loop["stopped"]:
            epoch, plan, done = loop["epoch"], plans[loop["epoch"] - 1], len(loop["losses"])
            tick = time.monotonic() - loop.get("epoch_seconds", 0.0)
            stop_at = None if batches_left is None else done + batches_left
            if not self._epoch(model, loss_fn, optimizer, scheduler, plan, data, epoch, loop["losses"], save, stop_at):
                save()
                return None
            if batches_left is not None:
                batches_left -= len(plan) - done
            loss = float(np.mean(loop["losses"]))
            result = EpochResult(epoch, self._evaluate(model, data, candidates, dev_qrels), loss)
            result.seconds = time.monotonic() - tick
            history.append(result)
            notice(f"epoch {epoch}: loss {loss:.4f}, dev nDCG@10 {result.dev['ndcg@10']:.4f}")
            best_epoch = loop["best_epoch"]
            if result.dev["ndcg@10"] > next(h.dev["ndcg@10"] for h in history if h.epoch == best_epoch):
                loop["best_epoch"], best_state = epoch, _snapshot(model)
            elif epoch - best_epoch >= self.s.patience:
                notice(f"no gain for {self.s.patience} epoch(s): stopping")
                loop["stopped"] = True
            loop.update(epoch=epoch + 1, losses=[])
            tick = time.monotonic()
            save()
        best_epoch = loop["best_epoch"]
        if best_epoch == 0:
            notice("no epoch beat the base encoder on the dev split: writing the base weights unchanged")
        model.load_state_dict(best_state)

        report = TuneReport(
            out=out,
            base=self.base.info(),
            revision="",
            train_queries=len(train),
            dev_queries=len(dev),
            pairs=sum(r > 0 for q in train for r in data.qrels[q].values()),
            negatives=negatives if self.s.hard_negatives and miner is not None else "none (in-batch only)",
            dev_evaluation=described,
            best_epoch=best_epoch,
            history=history,
        )
        self._write(model, out, report, data, dev)
        shutil.rmtree(state)
        report.seconds = earlier + time.monotonic() - started
        return report

    def _write(self, model: Any, out: Path, report: TuneReport, data: TuningData, dev: list[str]) -> None:
        """Save into a sibling temporary folder and rename it, so an interrupted run leaves no half encoder."""
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            model.save(str(staging), create_model_card=False)
            report.revision = Encoder(staging, device="cpu").revision
            record = {
                "format": FORMAT,
                "version": VERSION,
                "base": report.base.to_json(),
                "revision": report.revision,
                "data": {**data.sources, "queries_used": len(data.queries), "corpus_documents": len(data.docs)},
                "seed": self.s.seed,
                "split": {
                    "dev_fraction": self.s.dev_fraction,
                    "train_queries": report.train_queries,
                    "dev_queries": report.dev_queries,
                    "dev_ids": dev,
                },
                "settings": asdict(self.s),
                "pairs": report.pairs,
                "negatives": report.negatives,
                "dev_evaluation": report.dev_evaluation,
                "best_epoch": report.best_epoch,
                "before": report.before,
                "after": report.after,
                "history": [asdict(h) for h in report.history],
            }
            (staging / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
            if out.exists():
                out.rmdir()  # checked empty before training
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """``other settings (epochs 2, now 3)``, ``other data``: what a resumed run would change, named."""
    parts = []
    for key, value in now.items():
        before = saved.get(key)
        if before == value:
            continue
        keys = (
            [k for k in value if before.get(k) != value[k]]
            if isinstance(value, dict) and isinstance(before, dict)
            else []
        )
        # No named difference (a state saved with settings this version no longer compares): the section alone.
        named = f" ({', '.join(f'{k} {before.get(k)}, now {value[k]}' for k in keys)})" if keys else ""
        parts.append(f"other {key}{named}")
    return ", ".join(parts)


def state_folder(out: Path) -> Path:
    """Where a tuning run for ``out`` keeps what ``--resume`` needs."""
    return out.with_name(out.name + ".tuning")


def _write_best(state: Path, epoch: int, weights: dict[str, torch.Tensor]) -> Path:
    """The best epoch's weights, named by epoch so that the saved state always names a complete file."""
    path = state / f"best-{epoch}.safetensors"
    if not path.is_file():
        state.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in weights.items()}, str(partial))
        os.replace(partial, path)
    return path


def _read_best(state: Path, epoch: int) -> dict[str, torch.Tensor]:
    return read_safetensors(state / f"best-{epoch}.safetensors", load_file)
