"""Token states of retrieved passages on disk, computed once by a frozen encoder and read back memory-mapped, so
cross-attention over passage tokens costs no encoder pass per batch (``attention`` with ``passage_encoder:
frozen`` and ``passage_memory: tokens``).

A store is a folder: ``manifest.json`` (format, version, the encoder's revision, its hidden size,
``passage_max_length``, the kind of states its runtime gives (``fp32``: torch and onnx, whose states agree;
``int8``: onnx-int8), dtype, passage count), ``states.f16`` with every passage's token states back to back as
float16 rows of ``dim`` values, and ``index.json`` mapping each passage key (its caller's choice:
``inference.passages`` uses the passage id and a digest of its text) to its first row and token count. So keyed, one
store serves a run's training, dev and test splits and its later predictions; a store made by
another encoder revision, ``passage_max_length`` or kind of runtime is refused."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ralm_es.config import cache_home
from ralm_es.errors import RalmError

FORMAT = "ralm-es-token-states"
VERSION = 1
MANIFEST = "manifest.json"
STATES = "states.f16"
INDEX = "index.json"
LOCK = ".lock"
DTYPE = np.float16


class TokenStoreError(RalmError):
    """A token store made by another encoder or passage length, unreadable, or lacking a passage asked for."""


class TokenEncoder(Protocol):
    """What fills a store: ``ralm_es.embed.Encoder``."""

    def token_states(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Manifest:
    revision: str
    dim: int
    passage_max_length: int
    count: int = 0
    # Manifests written before runtimes were stores of torch's states.
    kind: str = "fp32"
    dtype: str = "float16"

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def default_folder(revision: str, passage_max_length: int, kind: str = "fp32") -> Path:
    """Where a store lives unless ``model.token_store`` says otherwise: one per encoder revision, kind of runtime
    and length (fp32 stores stay where they were before int8 ones existed)."""
    name = revision if kind == "fp32" else f"{revision}-{kind}"
    return cache_home() / "token-states" / name / f"len{passage_max_length}"


class TokenStore:
    """An opened store. ``get`` returns read-only memory-mapped views; ``extend`` adds the passages it lacks."""

    def __init__(self, folder: Path, manifest: Manifest, index: dict[str, tuple[int, int]]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.index = index
        self._rows = sum(n for _, n in index.values())
        self._states = self._map()

    @classmethod
    def open(
        cls, folder: str | Path, revision: str, dim: int, passage_max_length: int, kind: str = "fp32"
    ) -> TokenStore:
        """The store in ``folder``, created empty if there is none; one made otherwise is a TokenStoreError."""
        folder = Path(folder)
        wanted = Manifest(revision, dim, passage_max_length, kind=kind)
        if not (folder / MANIFEST).is_file():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with _locked(folder):
                    if not (folder / MANIFEST).is_file():
                        (folder / STATES).touch()
                        _write_json(folder / INDEX, {})
                        _write_json(folder / MANIFEST, wanted.to_json())
            except OSError as exc:
                raise TokenStoreError(f"cannot create the token store {folder} (model.token_store): {exc}") from None
        store = cls(folder, _read_manifest(folder), _read_index(folder))
        have = store.manifest
        if (have.revision, have.dim, have.passage_max_length, have.kind) != (revision, dim, passage_max_length, kind):
            raise TokenStoreError(
                f"token store {folder} was made by encoder revision {have.revision} (dim {have.dim}, "
                f"passage_max_length {have.passage_max_length}, {have.kind} states), not by this frozen encoder, "
                f"revision {revision} (dim {dim}, passage_max_length {passage_max_length}, {kind} states): set "
                "model.token_store to another folder"
            )
        return store

    def __len__(self) -> int:
        return len(self.index)

    def get(self, ids: Sequence[str]) -> list[np.ndarray]:
        """The token states (tokens, dim) of each passage id, in order."""
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise TokenStoreError(f"token store {self.folder} has no states for passage {missing[0]!r}")
        return [self._states[start : start + n] for start, n in (self.index[i] for i in ids)]

    def extend(self, ids: Sequence[str], texts: Sequence[str], encoder: TokenEncoder, batch_size: int = 64) -> int:
        """Encode and append the passages (``ids`` with their ``texts``) the store lacks; returns how many. Another
        process extending the same store waits, then adds only what is still missing."""
        with _locked(self.folder):
            # Another process may have extended the store since it was opened.
            self.index = _read_index(self.folder)
            self._rows = sum(n for _, n in self.index.values())
            todo: dict[str, str] = {}
            for pid, text in zip(ids, texts, strict=True):
                if pid not in self.index and pid not in todo:
                    todo[pid] = text
            if todo:
                states = encoder.token_states(list(todo.values()), batch_size=batch_size)
                path = self.folder / STATES
                with path.open("r+b") as fh:
                    # Rows an interrupted extend wrote but never indexed are dropped.
                    fh.truncate(self._rows * self.manifest.dim * np.dtype(DTYPE).itemsize)
                    fh.seek(0, os.SEEK_END)
                    for pid, array in zip(todo, states, strict=True):
                        fh.write(np.ascontiguousarray(array, dtype=DTYPE).tobytes())
                        self.index[pid] = (self._rows, len(array))
                        self._rows += len(array)
                    fh.flush()
                    os.fsync(fh.fileno())
                # The index is the commit: written after the rows it points to.
                _write_json(self.folder / INDEX, {pid: list(span) for pid, span in self.index.items()})
                self.manifest = Manifest(**{**asdict(self.manifest), "count": len(self.index)})
                _write_json(self.folder / MANIFEST, self.manifest.to_json())
            self._states = self._map()
        return len(todo)

    def _map(self) -> np.ndarray:
        if self._rows == 0:
            return np.zeros((0, self.manifest.dim), dtype=DTYPE)
        path = self.folder / STATES
        size = path.stat().st_size // (self.manifest.dim * np.dtype(DTYPE).itemsize)
        if size < self._rows:
            raise TokenStoreError(f"{path}: {size} token rows, but {self.folder / INDEX} indexes {self._rows}")
        return np.memmap(path, dtype=DTYPE, mode="r", shape=(self._rows, self.manifest.dim))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with (folder / LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("format", None) != FORMAT or data.pop("version", None) != VERSION:
            raise ValueError(f"not a version {VERSION} {FORMAT} manifest")
        return Manifest(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenStoreError(f"{path}: not a readable token store manifest ({exc})") from None


def _read_index(folder: Path) -> dict[str, tuple[int, int]]:
    path = folder / INDEX
    try:
        return {pid: (int(start), int(n)) for pid, (start, n) in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise TokenStoreError(f"{path}: not a readable token store index ({exc})") from None
