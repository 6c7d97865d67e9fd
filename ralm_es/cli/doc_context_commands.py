"""``ralm-es doc-context``: the other sentences of each input's own document as its passages, in a retrieval cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.command("doc-context")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=8, show_default=True, help="Passages per input.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file (JSONL) to write.")
@click.option(
    "--with",
    "merged",
    type=click.Path(exists=True, dir_okay=False),
    help="A cross-document retrieval cache of the same INPUT: context first, then its hits, k in all.",
)
@click.option(
    "--context",
    "most",
    type=click.IntRange(min=0),
    show_default="k",
    help="With --with: at most this many context sentences (the nearest), the retrieved hits after them.",
)
def doc_context(input_path: str, k: int, out: str, merged: str | None, most: int | None) -> None:
    """Document context for every sentence of a CoNLL file INPUT: the nearest other sentences of its document
    (never itself, never a label), written as a retrieval cache that `train` and `predict` read. An --out of an
    earlier doc-context run is replaced."""
    from ralm_es.corpus.types import ReadError
    from ralm_es.retrieve.cache import CacheWriter, read_cache
    from ralm_es.retrieve.context import context_header, document_context, merge

    if most is not None and not merged:
        raise click.UsageError("--context limits the context before a retrieval cache's hits; it needs --with")
    _check_replaceable(Path(out))
    header, retrieved = read_cache(merged, made_from=input_path) if merged else (None, {})
    entries = document_context(input_path, k)
    failed = 0
    # Written afresh and renamed into place at the end: a resume could keep another input's entries, or stale ones
    # of an edited input under the same ids, and context costs no cluster to make again. A failed run leaves --out
    # as it was.
    partial = Path(out).with_name(Path(out).name + ".partial")
    partial.unlink(missing_ok=True)  # a killed run's, which the writer would otherwise resume
    try:
        with CacheWriter(partial, context_header(k, header, most)) as writer:
            for entry in entries:
                if isinstance(entry, ReadError):
                    failed += 1
                    click.echo(f"ralm-es: {entry.source}: {entry.reason}", err=True)
                    continue
                if merged and entry.input_id not in retrieved:
                    raise click.ClickException(
                        f"{merged}: no retrieval for {entry.input_id}; was it made from {input_path}?"
                    )
                writer.write(entry.input_id, entry.query, merge(entry, retrieved.get(entry.input_id), k, most))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    click.echo(f"{len(writer.done)} inputs in {out}" + (f"; {failed} unreadable" if failed else ""), err=True)
    if failed:
        sys.exit(1)


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a file that is not a document-context cache: a cross-document cache took a cluster to
    make, and any other file is not this command's to overwrite."""
    from ralm_es.retrieve.cache import CacheError, read_header
    from ralm_es.retrieve.context import SOURCE

    if not out.is_file() or not out.stat().st_size:
        return
    try:
        mode = read_header(out).mode
    except CacheError:
        raise CacheError(f"{out} is not a retrieval cache; use a new --out or delete it") from None
    if not mode.startswith(SOURCE):
        raise CacheError(f"{out} holds a {mode} retrieval cache, not document context; use a new --out or delete it")
