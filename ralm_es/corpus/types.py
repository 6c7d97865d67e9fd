"""The records that flow from corpus files to the index: a source document, and the passages cut from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Record:
    """One document as read from a corpus file; ``source`` is ``file:line`` for error messages."""

    id: str
    text: str
    source: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Passage:
    """A chunk of a record, the unit that is embedded, indexed and retrieved."""

    id: str
    doc_id: str
    chunk: int
    text: str
    source: str
    title: str = ""
    start: int = 0
    end: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None


@dataclass(frozen=True)
class ReadError:
    """A record that could not be read: where it was and why. Readers yield these and carry on."""

    source: str
    reason: str
