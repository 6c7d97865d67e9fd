"""``ralm-es doc-context``: the other sentences of each input's own document as its passages, in a retrieval cache."""

from __future__ import annotations

import sys

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
    (never itself, never a label), written as a retrieval cache that `train` and `predict` read."""
    from ralm_es.corpus.types import ReadError
    from ralm_es.retrieve.cache import CacheWriter, read_cache
    from ralm_es.retrieve.context import context_header, document_context, merge

    if most is not None and not merged:
        raise click.UsageError("--context limits the context before a retrieval cache's hits; it needs --with")
    header, retrieved = read_cache(merged, made_from=input_path) if merged else (None, {})
    entries = document_context(input_path, k)
    failed = 0
    with CacheWriter(out, context_header(k, header, most)) as writer:
        for entry in entries:
            if isinstance(entry, ReadError):
                failed += 1
                click.echo(f"ralm-es: {entry.source}: {entry.reason}", err=True)
                continue
            if entry.input_id in writer.done:
                continue
            if merged and entry.input_id not in retrieved:
                raise click.ClickException(
                    f"{merged}: no retrieval for {entry.input_id}; was it made from {input_path}?"
                )
            writer.write(entry.input_id, entry.query, merge(entry, retrieved.get(entry.input_id), k, most))
    click.echo(f"{len(writer.done)} inputs in {out}" + (f"; {failed} unreadable" if failed else ""), err=True)
    if failed:
        sys.exit(1)
