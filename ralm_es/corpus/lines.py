"""Line-by-line reading of corpus files: gzip detected by suffix or magic bytes, UTF-8 decoded per line so one bad
line is reported and skipped, and a cap on line length so a runaway line cannot exhaust memory."""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 1 << 16
# Lines are read in pieces of this size once they are known to be over the cap, to skip them in bounded memory.
SKIP_PIECE = 1 << 20


@dataclass(frozen=True)
class Line:
    """One physical line (1-based ``number``, line ending removed). ``problem`` says why it cannot be trusted;
    ``text`` is then a best-effort decoding (empty for an over-long line)."""

    number: int
    text: str
    problem: str | None = None


def is_gzip(path: Path) -> bool:
    if path.name.endswith(".gz"):
        return True
    with path.open("rb") as fh:
        return fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if is_gzip(path) else path.open("rb")


def head_bytes(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first ``size`` bytes of the (decompressed) content, for format sniffing."""
    try:
        with open_binary(path) as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        # A corrupt gzip header is reported by the reader with its line; sniffing sees only what it could read.
        return b""


def iter_lines(path: Path, max_bytes: int) -> Iterator[Line]:
    """Every line of ``path``; a line over ``max_bytes`` bytes, invalid UTF-8 or a read failure (truncated gzip)
    becomes a ``Line`` with a ``problem``. A read failure ends the file."""
    number = 0
    try:
        with open_binary(path) as fh:
            while raw := fh.readline(max_bytes + 1):
                number += 1
                if len(raw) > max_bytes and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):
                        raw = fh.readline(SKIP_PIECE)
                    yield Line(number, "", f"line longer than {max_bytes} bytes")
                    continue
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    yield Line(number, text, f"invalid UTF-8 (byte {exc.start} of the line)")
                    continue
                yield Line(number, text.rstrip("\r\n"))
    except (OSError, EOFError, zlib.error) as exc:
        yield Line(number + 1, "", f"cannot read further: {exc}")
