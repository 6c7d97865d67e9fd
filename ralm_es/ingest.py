"""Stream a corpus into a passage store: read, chunk, skip what is stored, embed, write — resumable.

The encoder runs on the calling thread while up to ``in_flight`` writes run on worker threads, so embedding
and bulk indexing overlap. Batches end on record boundaries, and a checkpoint (records fully written, in
order) is saved after each completed batch: an interrupted run continues with no loss and no duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ralm_es.corpus.chunking import Chunker
from ralm_es.corpus.readers import read_corpus
from ralm_es.corpus.types import Passage, ReadError, Record
from ralm_es.embed import Encoder, resolve_model_path
from ralm_es.errors import RalmError
from ralm_es.es.distribution import cache_home
from ralm_es.store.base import Backend, IndexSpec, WriteResult

TRANSIENT_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)


def _transient(result: WriteResult) -> bool:
    return not result.ok and (result.status == 429 or result.status >= 500)


class IngestError(RalmError):
    """Ingest cannot start or continue (bad settings, a checkpoint from another run)."""


@dataclass
class IngestSettings:
    format: str = "auto"
    id_field: str | None = None
    text_field: str = "text"
    title_field: str = "title"
    metadata_fields: list[str] | None = None
    unit: Literal["paragraph", "file"] = "paragraph"
    max_chars: int = 1_000_000
    model: str | None = None
    embed: bool = True
    device: str = "auto"
    encode_batch: int = 64
    max_tokens: int = 256
    overlap: int = 32
    batch_passages: int = 512
    bulk_docs: int = 500
    bulk_bytes: int = 8 * 1024 * 1024
    in_flight: int = 2
    similarity: str = "cosine"
    index_type: str = "hnsw"
    m: int = 16
    ef_construction: int = 100
    shards: int = 1
    replicas: int = 0
    reindex: bool = False
    keep_old: bool = False
    resume: bool = True


@dataclass
class IngestSummary:
    read: int = 0
    passages: int = 0
    indexed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    index: str = ""
    resumed_from: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k in ("read", "passages", "indexed", "failed", "skipped", "seconds")
        }


ErrorCallback = Callable[[str, str], None]
ProgressCallback = Callable[[int, int], None]


@dataclass
class _Batch:
    passages: list[Passage] = field(default_factory=list)
    records_upto: int = 0


class Checkpoint:
    """Records fully written so far for one (inputs, index, model) combination, kept as JSON."""

    def __init__(self, key_parts: dict[str, Any], folder: Path | None = None) -> None:
        digest = hashlib.sha1(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (folder or cache_home() / "checkpoints") / f"ingest-{digest}.json"
        self.key = key_parts

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return json.loads(self.path.read_text())

    def save(self, records_done: int, target: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "records_done": records_done, "target": target}))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _records(paths: Sequence[str | Path], s: IngestSettings) -> Iterator[Record | ReadError]:
    for path in paths:
        yield from read_corpus(
            path,
            format=s.format,
            id_field=s.id_field,
            text_field=s.text_field,
            title_field=s.title_field,
            metadata_fields=s.metadata_fields,
            unit=s.unit,
            max_chars=s.max_chars,
        )


class Ingest:
    """One ingest run into ``backend``; ``run`` returns the summary."""

    def __init__(
        self,
        backend: Backend,
        settings: IngestSettings,
        encoder: Encoder | None = None,
        on_error: ErrorCallback | None = None,
        on_progress: ProgressCallback | None = None,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.s = settings
        if settings.embed and encoder is None:
            encoder = Encoder(settings.model, device=settings.device, max_length=settings.max_tokens)
        self.encoder = encoder if settings.embed else None
        self.tokenizer: PreTrainedTokenizerBase = (
            encoder.tokenizer
            if encoder is not None
            else AutoTokenizer.from_pretrained(resolve_model_path(settings.model), local_files_only=True)
        )
        self.chunker = Chunker(self.tokenizer, settings.max_tokens, settings.overlap)
        self.on_error = on_error or (lambda source, reason: None)
        self.on_progress = on_progress or (lambda records, passages: None)
        self.checkpoint_dir = checkpoint_dir

    def spec(self) -> IndexSpec:
        s = self.s
        return IndexSpec(
            name=self.backend.index,
            dims=self.encoder.dim if self.encoder else None,
            similarity=s.similarity,
            index_type=s.index_type,
            m=s.m,
            ef_construction=s.ef_construction,
            shards=s.shards,
            replicas=s.replicas,
            model=self.encoder.info() if self.encoder else None,
        )

    def run(self, paths: Sequence[str | Path]) -> IngestSummary:
        started = time.monotonic()
        summary = IngestSummary()
        spec = self.spec()
        checkpoint = Checkpoint(
            {
                "paths": [str(Path(p).resolve()) for p in paths],
                "index": spec.name,
                "backend": self.backend.name,
                "model": spec.model["revision"] if spec.model else None,
                "reindex": self.s.reindex,
                "chunking": [self.s.max_tokens, self.s.overlap],
            },
            self.checkpoint_dir,
        )
        state = checkpoint.load() if self.s.resume else None
        target = self._prepare_target(spec, state)
        summary.index = target
        skip = int(state["records_done"]) if state else 0
        summary.resumed_from = skip
        previous_refresh = self._pause_refresh(target)
        try:
            self._stream(paths, target, skip, summary, checkpoint)
        except BaseException:
            # The cluster may be gone; the rerun that resumes from the checkpoint restores refresh then.
            with contextlib.suppress(Exception):
                self._restore_refresh(target, previous_refresh)
            raise
        self._restore_refresh(target, previous_refresh)
        if self.s.reindex:
            self.backend.swap_alias(target, drop_old=not self.s.keep_old)  # type: ignore[attr-defined]
        checkpoint.clear()
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def _prepare_target(self, spec: IndexSpec, state: dict[str, Any] | None) -> str:
        if not self.s.reindex:
            self.backend.ensure_index(spec)
            return spec.name
        if not hasattr(self.backend, "create_index"):
            raise IngestError(f"--reindex needs the Elasticsearch backend, not '{self.backend.name}'")
        if state and state.get("target"):
            return str(state["target"])
        return self.backend.create_index(spec, alias=False)  # type: ignore[attr-defined]

    def _pause_refresh(self, target: str) -> Any:
        """Switch refresh off for the bulk load (Elasticsearch only); returns the interval to restore."""
        if not hasattr(self.backend, "set_refresh"):
            return None
        client = self.backend.client  # type: ignore[attr-defined]
        indices = client.indices.get_settings(index=target, name="index.refresh_interval").body
        previous = next(iter(indices.values()), {}).get("settings", {}).get("index", {}).get("refresh_interval")
        self.backend.set_refresh("-1", index=target)  # type: ignore[attr-defined]
        # "-1" here is the leftover of a run that died mid-load: restore the default then.
        return None if previous == "-1" else previous

    def _restore_refresh(self, target: str, previous: Any) -> None:
        if hasattr(self.backend, "set_refresh"):
            self.backend.set_refresh(previous, index=target)  # type: ignore[attr-defined]
            self.backend.client.indices.refresh(index=target)  # type: ignore[attr-defined]

    def _batches(self, paths: Sequence[str | Path], skip: int, summary: IngestSummary) -> Iterator[_Batch]:
        batch = _Batch()
        pending: list[Record] = []
        position = 0

        def flush_pending() -> None:
            batch.passages.extend(self.chunker.chunk_many(pending))
            pending.clear()

        for item in _records(paths, self.s):
            position += 1
            if position <= skip:
                continue
            if isinstance(item, ReadError):
                summary.failed += 1
                summary.errors.append({"source": item.source, "reason": item.reason})
                self.on_error(item.source, item.reason)
            else:
                summary.read += 1
                pending.append(item)
            # Records are chunked in groups so the tokenizer works on many texts per call.
            if len(pending) >= 64:
                flush_pending()
            if len(batch.passages) >= self.s.batch_passages:
                flush_pending()
                batch.records_upto = position
                yield batch
                batch = _Batch()
        flush_pending()
        batch.records_upto = position
        yield batch

    def _stream(
        self, paths: Sequence[str | Path], target: str, skip: int, summary: IngestSummary, checkpoint: Checkpoint
    ) -> None:
        write_kwargs = {"index": target} if self.s.reindex else {}
        in_flight: deque[tuple[Future[list[WriteResult]], int]] = deque()

        def settle_oldest() -> None:
            future, records_upto = in_flight.popleft()
            for result in future.result():
                if not result.ok:
                    summary.failed += 1
                    summary.errors.append({"source": result.source, "reason": result.error or "write failed"})
                    self.on_error(result.source, result.error or "write failed")
                elif result.created:
                    summary.indexed += 1
                else:
                    summary.skipped += 1
            checkpoint.save(records_upto, target)
            self.on_progress(summary.read, summary.passages)

        with ThreadPoolExecutor(max_workers=self.s.in_flight) as pool:
            try:
                for batch in self._batches(paths, skip, summary):
                    summary.passages += len(batch.passages)
                    fresh = self._drop_stored(batch.passages, target, summary)
                    self._embed(fresh)
                    future = pool.submit(self._write, fresh, write_kwargs)
                    in_flight.append((future, batch.records_upto))
                    while len(in_flight) > self.s.in_flight:
                        settle_oldest()
                while in_flight:
                    settle_oldest()
            except BaseException:
                # Keep what finished: settle completed writes in order so the checkpoint is exact.
                while in_flight and in_flight[0][0].done() and not in_flight[0][0].exception():
                    settle_oldest()
                for future, _ in in_flight:
                    future.cancel()
                raise

    def _write(self, passages: list[Passage], kwargs: dict[str, Any]) -> list[WriteResult]:
        """Write a batch; passages refused for a passing reason (429, 5xx: a node lost, a shard relocating)
        are written again with backoff, so a checkpoint never moves past a passage that could still be stored."""
        results = {r.id: r for r in self.backend.write(passages, **kwargs)}
        for delay in TRANSIENT_BACKOFF:
            retry = [p for p in passages if _transient(results[p.id])]
            if not retry:
                break
            time.sleep(delay)
            results.update({r.id: r for r in self.backend.write(retry, **kwargs)})
        return [results[p.id] for p in passages]

    def _drop_stored(self, passages: list[Passage], target: str, summary: IngestSummary) -> list[Passage]:
        """Passages already in the store are counted as skipped and neither embedded nor sent."""
        if not passages:
            return passages
        kwargs = {"index": target} if self.s.reindex else {}
        stored = self.backend.existing_ids([p.id for p in passages], **kwargs)
        summary.skipped += len(stored)
        return [p for p in passages if p.id not in stored]

    def _embed(self, passages: list[Passage]) -> None:
        if self.encoder is None or not passages:
            return
        vectors = self.encoder.encode([p.text for p in passages], batch_size=self.s.encode_batch)
        for passage, vector in zip(passages, vectors, strict=True):
            passage.vector = vector.tolist()
