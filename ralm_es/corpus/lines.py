"""Line-by-line reading of corpus files: gzip detected by suffix or magic bytes, UTF-8 decoded per line so one bad
line is reported and skipped, and a cap on line length so a runaway line cannot exhaust memory."""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
    # False for a last line without its line ending: a file cut off mid-write (a retrieval cache resumes past it).
    complete: bool = True


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSON Lines file: its object, or the ``problem`` that it is none."""

    number: int
    obj: dict[str, Any]
    problem: str | None = None
    complete: bool = True


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
                complete = raw.endswith(b"\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    yield Line(number, text, f"invalid UTF-8 (byte {exc.start} of the line)", complete)
                    continue
                yield Line(number, text.rstrip("\r\n"), complete=complete)
    except (OSError, EOFError, zlib.error) as exc:
        yield Line(number + 1, "", f"cannot read further: {exc}")


def iter_json_lines(path: Path, max_bytes: int) -> Iterator[JsonLine]:
    """Every non-blank line of a JSON Lines file as an object, or with the one reason it is none: unreadable (as
    ``iter_lines`` says), malformed JSON, not an object, or a lone surrogate (valid JSON through a \\udXXX escape,
    but a string that no UTF-8 output, and no tokenizer, can take)."""
    for line in iter_lines(path, max_bytes):
        if line.problem is None and not line.text.strip():
            continue
        problem, obj = line.problem, None
        if problem is None:
            try:
                obj = json.loads(line.text)
            except json.JSONDecodeError as exc:
                problem = f"malformed JSON: {exc.msg} (column {exc.colno})"
        if problem is None and not isinstance(obj, dict):
            problem = f"expected a JSON object, found {type(obj).__name__}"
        if problem is None and "\\u" in line.text and (bad := lone_surrogate(obj)) is not None:
            problem = f"escaped lone surrogate {bad!r} (\\u{ord(bad):04x}): not valid Unicode"
        yield JsonLine(line.number, obj if problem is None else {}, problem, line.complete)


def lone_surrogate(obj: Any) -> str | None:
    """The first lone surrogate in ``obj``'s strings, keys included, or None."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return str(exc.object[exc.start])
    return None
