"""Where the shared benchmark sets (SciFact, CoNLL-2003) and the shipped samples are. Benchmark data is never
copied into the repository: it is found through ``RALM_ES_DATA`` or a ``shared/data`` folder next to the repo."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ralm_es.errors import RalmError

DATA_ENV = "RALM_ES_DATA"
SCIFACT_FILES = {
    "corpus": "corpus.jsonl",
    "queries_train": "queries.train.jsonl",
    "qrels_train": "qrels/train.tsv",
    "claims_train": "claims.train.jsonl",
}
CONLL_SPLITS = ("train", "dev", "test")
SAMPLES = ("sample_corpus.jsonl", "sample_claims.jsonl", "sample_ner.txt")


class BenchmarkDataError(RalmError):
    """Benchmark data or a sample that cannot be found; says where it looked."""


def shared_data_dir() -> Path:
    """``$RALM_ES_DATA`` if set (it must then exist), else the first ``../shared/data`` folder relative to the
    repository or the working directory."""
    if env := os.environ.get(DATA_ENV):
        folder = Path(env)
        if not folder.is_dir():
            raise BenchmarkDataError(f"{DATA_ENV}={env} is not a folder")
        return folder
    # corpora/ sits at the repository root in a source checkout, so its parent's parent holds shared/.
    candidates = [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise BenchmarkDataError(f"shared benchmark data not found (looked in {looked}); set {DATA_ENV} to its folder")


def _existing(folder: Path, names: dict[str, str]) -> dict[str, Path]:
    paths = {key: folder / name for key, name in names.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise BenchmarkDataError(f"benchmark files missing: {', '.join(missing)}")
    return paths


def scifact_paths() -> dict[str, Path]:
    """SciFact in BEIR layout: keys ``corpus``, ``queries_train``, ``qrels_train``, ``claims_train``."""
    return _existing(shared_data_dir() / "scifact", SCIFACT_FILES)


def conll_paths() -> dict[str, Path]:
    """CoNLL-2003 English: keys ``train``, ``dev``, ``test``."""
    return _existing(shared_data_dir() / "conll2003", {split: f"{split}.txt" for split in CONLL_SPLITS})


def sample_path(name: str) -> Path:
    """A sample shipped in this package: ``sample_corpus.jsonl``, ``sample_claims.jsonl`` or ``sample_ner.txt``."""
    if name not in SAMPLES:
        raise BenchmarkDataError(f"no sample named {name!r}; the samples are {', '.join(SAMPLES)}")
    # The package is installed as plain files (not zipped), so the resource is a real path.
    path = Path(str(files("ralm_es.corpora") / name))
    if not path.is_file():
        raise BenchmarkDataError(f"sample {name} is missing from the installed package at {path}")
    return path
