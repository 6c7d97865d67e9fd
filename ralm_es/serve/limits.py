"""Per-request limits: too many passages is an invalid value (422); too much input is too large (413)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException

from ralm_es.serve.settings import ServeSettings


def check_request(settings: ServeSettings, texts: Sequence[str], k: int | None = None) -> None:
    if k is not None and k > settings.max_k:
        raise HTTPException(422, f"k={k} is over this server's limit of {settings.max_k} passages (serve.max_k)")
    if len(texts) > settings.max_batch:
        raise HTTPException(
            413, f"{len(texts)} inputs in one request; this server's limit is {settings.max_batch} (serve.max_batch)"
        )
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            where = "text" if len(texts) == 1 else f"inputs[{i}]"
            raise HTTPException(
                413,
                f"{where} has {len(text)} characters; this server's limit is {settings.max_text_chars} "
                "(serve.max_text_chars)",
            )
