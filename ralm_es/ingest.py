"""Stream a corpus into a passage store: read, chunk, skip what is stored, embed, write — resumable.

The encoder runs on the calling thread while up to ``in_flight`` writes run on worker threads, so embedding
and bulk indexing overlap. Batches end on record boundaries, and a checkpoint (records fully written, in
order) is saved after each completed batch: an interrupted run continues with no loss and no duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralm_es.config import ConfigError, cache_home, check_bounds, check_choices
from ralm_es.corpus.chunking import Chunker, passage_id
from ralm_es.corpus.readers import ReadOptions, plan_inputs, read_corpus
from ralm_es.corpus.types import Passage, ReadError, Record
from ralm_es.model_folder import load_tokenizer, resolve_model_path, tokenizer_revision
from ralm_es.onnx_runtime import ONNX_RUNTIMES, Runtime
from ralm_es.store.base import (
    MAX_ID_BYTES,
    Backend,
    BulkSettings,
    Chunking,
    IndexSettings,
    IndexSpec,
    Refresh,
    WriteResult,
)

if TYPE_CHECKING:
    from ralm_es.embed import Encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkSettings:
    """How records are cut into passages: at most ``max_tokens`` encoder tokens, ``overlap`` shared by neighbours."""

    max_tokens: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        check_bounds("chunking", self, ("max_tokens",), 1)
        check_bounds("chunking", self, ("overlap",), 0)


# The settings that only shape embedding, and the index settings that only shape the vector field.
EMBED_SETTINGS = ("device", "runtime", "encode_batch")
VECTOR_INDEX_SETTINGS = ("similarity", "index_type", "m", "ef_construction")
# Room in a passage id ("<doc id>#<n>") for a document of up to a million passages.
LARGEST_CHUNK = 999_999
ID_LIMIT = (
    f"its passage ids ('<id>#<n>') must fit Elasticsearch's {MAX_ID_BYTES}-byte _id, "
    f"so ids are at most {MAX_ID_BYTES - len(passage_id('', LARGEST_CHUNK))} bytes"
)


@dataclass
class IngestSettings:
    """An ingest, section by section: how records are read, cut into passages, embedded (``model``, ``embed``,
    ``device``, ``runtime``, ``encode_batch``), into what kind of index, and how they are written (``bulk``;
    ``batch_passages`` a checkpointed batch, ``in_flight`` batches written while the next is embedded)."""

    read: ReadOptions = field(default_factory=ReadOptions)
    chunking: ChunkSettings = field(default_factory=ChunkSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    bulk: BulkSettings = field(default_factory=BulkSettings)
    model: str | None = None
    embed: bool = True
    device: str = "auto"
    runtime: Runtime = "torch"
    encode_batch: int = 64
    batch_passages: int = 512
    in_flight: int = 2
    reindex: bool = False
    keep_old: bool = False
    resume: bool = True

    def __post_init__(self) -> None:
        # Checked before anything is read or written: a zero batch would stall the run.
        check_bounds("ingest", self, ("encode_batch", "batch_passages", "in_flight"), 1)
        check_choices("ingest", self, ("runtime",))

    def unused(self) -> str | None:
        """One line naming the settings set away from their defaults that the others make do nothing (a config
        file written for embedding, run with --no-embed); None when every one of them does something."""
        default = IngestSettings()
        parts = []
        if not self.embed:
            embedding = [f"{n}={getattr(self, n)}" for n in EMBED_SETTINGS if getattr(self, n) != getattr(default, n)]
            embedding += [
                f"index.{n}={getattr(self.index, n)}"
                for n in VECTOR_INDEX_SETTINGS
                if getattr(self.index, n) != getattr(default.index, n)
            ]
            if embedding:
                parts.append(f"nothing is embedded (--no-embed), so {', '.join(embedding)} do nothing")
        if self.embed and self.runtime in ONNX_RUNTIMES and self.device not in ("auto", "cpu"):
            parts.append(f"runtime {self.runtime} runs on the CPU, so device={self.device} does nothing")
        if self.keep_old and not self.reindex:
            parts.append("--keep-old does nothing without --reindex")
        return "; ".join(parts) or None


@dataclass
class IngestSummary:
    read: int = 0
    passages: int = 0
    indexed: int = 0
    failed: int = 0
    # Records the reader refused (a bad line, a repeated id), counted in ``failed`` beside the passages not written.
    unreadable: int = 0
    skipped: int = 0
    seconds: float = 0.0
    index: str = ""
    resumed_from: int = 0
    # Documents of the records before ``resumed_from`` that failed in the interrupted run (included in ``failed``).
    failed_before_resume: int = 0
    # Why an interrupted run's checkpoint was not followed (its input or settings changed); None when it was.
    restarted: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k in ("read", "passages", "indexed", "failed", "unreadable", "skipped", "seconds")
        }


ErrorCallback = Callable[[str, str], None]
ProgressCallback = Callable[[int, int], None]


@dataclass
class _Batch:
    passages: list[Passage] = field(default_factory=list)
    records_upto: int = 0
    read_failures: int = 0


@dataclass(frozen=True)
class InputFile:
    """One input file as a checkpoint saw it: a resume follows the checkpoint only if every file is unchanged."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> InputFile:
        stat = path.stat()
        with path.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest)


@dataclass
class CheckpointState:
    """What an interrupted run leaves: ``records_done`` records (in read order) fully written into ``target``,
    ``failed`` documents of them refused, from exactly ``inputs`` read and cut with ``shape``; ``refresh`` is the
    interval to put back at the end."""

    records_done: int
    target: str
    inputs: list[InputFile]
    shape: dict[str, Any]
    refresh: str | None
    failed: int = 0
    unreadable: int = 0


class Checkpoint:
    """The state of one (inputs, index, backend) run, kept as JSON beside the other ralm-es caches."""

    def __init__(self, key_parts: dict[str, Any], folder: Path | None = None) -> None:
        digest = hashlib.sha1(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (folder or cache_home() / "checkpoints") / f"ingest-{digest}.json"
        self.key = key_parts

    def load(self) -> CheckpointState | None:
        if not self.path.exists():
            return None
        try:
            raw = json.loads(self.path.read_text())
            return CheckpointState(
                records_done=int(raw["records_done"]),
                target=str(raw["target"]),
                inputs=[InputFile(**f) for f in raw["inputs"]],
                shape=dict(raw["shape"]),
                refresh=raw["refresh"],
                # Written before checkpoints counted failures: none known (reading it as unreadable would start
                # over and take the paused refresh interval for the index's own).
                failed=int(raw.get("failed", 0)),
                unreadable=int(raw.get("unreadable", 0)),
            )
        except (ValueError, KeyError, TypeError):
            # A checkpoint this version cannot read proves nothing: start over, checking ids.
            return None

    def save(self, state: CheckpointState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, **asdict(state)}))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def changed_inputs(before: list[InputFile], now: list[InputFile]) -> str | None:
    """Why ``now`` is not the input ``before`` describes, or None when it is the same."""
    if [f.path for f in before] != [f.path for f in now]:
        return "the input files are not the ones of the interrupted run"
    for old, new in zip(before, now, strict=True):
        if old != new:
            return f"{new.path} changed since the interrupted run"
    return None


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
        if unused := settings.unused():
            log.warning(unused)
        if settings.embed and encoder is None:
            from ralm_es.embed import Encoder  # torch is imported only by an ingest that embeds

            encoder = Encoder(
                settings.model,
                device=settings.device,
                max_length=settings.chunking.max_tokens,
                runtime=settings.runtime,
            )
        self.encoder = encoder if settings.embed else None
        folder = encoder.path if encoder is not None else resolve_model_path(settings.model)
        cut = settings.chunking
        if self.encoder is not None and cut.max_tokens > self.encoder.max_length:
            # The encoder truncates: the passage's tail would be searchable by BM25 but absent from its vector.
            raise ConfigError(
                f"chunking.max_tokens is {cut.max_tokens}, but the encoder in {folder} reads at most "
                f"{self.encoder.max_length} tokens a passage; set chunking.max_tokens to {self.encoder.max_length} "
                "or less"
            )
        self.chunker = Chunker(load_tokenizer(folder), cut.max_tokens, cut.overlap)
        self.chunking = Chunking(cut.max_tokens, cut.overlap, tokenizer_revision(folder))
        self.on_error = on_error or (lambda source, reason: None)
        self.on_progress = on_progress or (lambda records, passages: None)
        self.checkpoint_dir = checkpoint_dir

    def spec(self) -> IndexSpec:
        return IndexSpec(
            name=self.backend.index,
            dims=self.encoder.dim if self.encoder else None,
            settings=self.s.index,
            model=self.encoder.info() if self.encoder else None,
            chunking=self.chunking,
        )

    def shape(self) -> dict[str, Any]:
        """The settings that decide which records are read and how they are cut: a resume needs the same."""
        return {
            "read": asdict(self.s.read),
            "chunking": asdict(self.chunking),
            "embed": self.encoder.revision if self.encoder else None,
        }

    def run(self, paths: Sequence[str | Path]) -> IngestSummary:
        started = time.monotonic()
        summary = IngestSummary()
        spec = self.spec()
        # Planning checks every path and format up front; the fingerprint proves what a resume continues.
        inputs = [InputFile.of(file) for file, _, _ in plan_inputs(paths, self.s.read)]
        self.backend.check_bulk(self.s.bulk)
        shape = self.shape()
        checkpoint = Checkpoint(
            {
                "paths": [f.path for f in inputs],
                "index": spec.name,
                "backend": self.backend.name,
                "reindex": self.s.reindex,
            },
            self.checkpoint_dir,
        )
        state = checkpoint.load() if self.s.resume else None
        skip = 0
        if state is not None:
            reshaped = state.shape != shape
            summary.restarted = changed_inputs(state.inputs, inputs) or (
                "the settings that read and cut passages changed" if reshaped else None
            )
            skip = 0 if summary.restarted else state.records_done
            if summary.restarted and self.s.reindex:
                # Passages of another input, or cut otherwise, must not be served from the half-filled index (a
                # start over skips the ids it holds): build a fresh one, say so.
                summary.restarted += f"; the index the interrupted run was filling, {state.target}, is left as it was"
                state = None
        summary.resumed_from = skip
        # A resume's count of failures covers the whole input, so --on-error fail still sees the earlier ones.
        summary.failed = summary.failed_before_resume = state.failed if state and skip else 0
        summary.unreadable = state.unreadable if state and skip else 0
        if self.s.reindex:
            target = self.backend.staging(spec, resume=state.target if state else None)
        else:
            self.backend.ensure_index(spec)
            target = self.backend
        summary.index = target.index
        before = Refresh(state.refresh) if state else target.refresh_interval()
        # Saved before refresh is paused, so that even a run killed in its first batch restores the interval.
        progress = CheckpointState(
            skip, target.index, inputs, shape, before.interval, summary.failed, summary.unreadable
        )
        checkpoint.save(progress)
        with target.bulk_load(before):
            self._stream(paths, target, skip, summary, checkpoint, progress)
        if self.s.reindex:
            self.backend.swap_alias(target.index, drop_old=not self.s.keep_old)
        checkpoint.clear()
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def _batches(self, paths: Sequence[str | Path], skip: int, summary: IngestSummary) -> Iterator[_Batch]:
        batch = _Batch()
        pending: list[Record] = []
        position = 0

        def flush_pending() -> None:
            batch.passages.extend(self.chunker.chunk_many(pending))
            pending.clear()

        for item in read_corpus(paths, self.s.read):
            position += 1
            if position <= skip:
                continue
            if isinstance(item, Record) and len(passage_id(item.id, LARGEST_CHUNK).encode()) > MAX_ID_BYTES:
                item = ReadError(item.source, f"id of {len(item.id.encode())} bytes is too long: {ID_LIMIT}")
            if isinstance(item, ReadError):
                summary.failed += 1
                summary.unreadable += 1
                batch.read_failures += 1
                summary.errors.append({"source": item.source, "reason": item.reason})
                self.on_error(item.source, item.reason)
            else:
                summary.read += 1
                pending.append(item)
            # Records are chunked in groups so the tokenizer works on many texts per call; a group stops where the
            # batch could be full, as every record gives at least one passage.
            if len(pending) >= min(64, self.s.batch_passages - len(batch.passages)):
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
        self,
        paths: Sequence[str | Path],
        target: Backend,
        skip: int,
        summary: IngestSummary,
        checkpoint: Checkpoint,
        progress: CheckpointState,
    ) -> None:
        in_flight: deque[tuple[Future[list[WriteResult]], _Batch]] = deque()

        def settle_oldest() -> None:
            future, batch = in_flight[0]
            # A write that raised stays queued, so the handler below stops at it and the checkpoint never passes it.
            results = future.result()
            in_flight.popleft()
            progress.failed += batch.read_failures
            progress.unreadable += batch.read_failures
            for result in results:
                if not result.ok:
                    summary.failed += 1
                    progress.failed += 1
                    summary.errors.append({"source": result.source, "reason": result.error or "write failed"})
                    self.on_error(result.source, result.error or "write failed")
                elif result.created:
                    summary.indexed += 1
                else:
                    summary.skipped += 1
            progress.records_done = batch.records_upto
            checkpoint.save(progress)
            self.on_progress(summary.read, summary.passages)

        with ThreadPoolExecutor(max_workers=self.s.in_flight) as pool:
            try:
                for batch in self._batches(paths, skip, summary):
                    summary.passages += len(batch.passages)
                    fresh = self._drop_stored(batch.passages, target, summary)
                    self._embed(fresh)
                    # write() is a generator: list() runs it, and the bulk requests, on the worker thread.
                    future = pool.submit(list, target.write(fresh, self.s.bulk))
                    in_flight.append((future, batch))
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

    def _drop_stored(self, passages: list[Passage], target: Backend, summary: IngestSummary) -> list[Passage]:
        """Passages already in the store are counted as skipped and neither embedded nor sent."""
        if not passages:
            return passages
        stored = target.existing_ids([p.id for p in passages])
        summary.skipped += len(stored)
        return [p for p in passages if p.id not in stored]

    def _embed(self, passages: list[Passage]) -> None:
        if self.encoder is None or not passages:
            return
        vectors = self.encoder.encode([p.text for p in passages], batch_size=self.s.encode_batch)
        for passage, vector in zip(passages, vectors, strict=True):
            passage.vector = vector.tolist()
