"""The REST API as a FastAPI app, built by ``create_app`` from real objects (tests build it the same way)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import torch
from elasticsearch import ApiError, TransportError
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ralm_es.config import ConfigError
from ralm_es.errors import RalmError
from ralm_es.es.client import describe_api_error
from ralm_es.retrieve.retriever import RetrievalError, Retriever, check_query
from ralm_es.serve import models as m
from ralm_es.serve.auth import bearer_auth
from ralm_es.serve.batching import RETRY_AFTER_S, Batcher, PredictKey, Queries, QueueFull, SearchKey, api_runner
from ralm_es.serve.limits import check_request
from ralm_es.serve.middleware import AccessLog, BodyLimit
from ralm_es.serve.predictor import PredictInput, Predictor
from ralm_es.serve.settings import ServeSettings
from ralm_es.store.base import Filter
from ralm_es.version import __version__

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorOut, "description": text}
    for code, text in {
        400: "The library refused the request (empty query, unknown field, wrong mode for the index).",
        401: "Missing or wrong bearer token (only when RALM_ES_API_TOKEN is set).",
        413: "Too many inputs, too long a text, or too large a body.",
        503: "Elasticsearch is unreachable or overloaded, or this server's queue is full (with Retry-After).",
    }.items()
}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error may echo input holding a lone surrogate, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _filters(items: list[m.FilterIn]) -> list[Filter]:
    return [Filter(f.field, f.kind, f.value) for f in items]


def _protected_docs(app: FastAPI, protected: list[Any]) -> None:
    """FastAPI's documentation routes take no dependencies: the same three pages, behind the bearer token."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=protected)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=protected)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False, dependencies=protected)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


def create_app(settings: ServeSettings, retriever: Retriever, predictor: Predictor | None = None) -> FastAPI:
    """The app over ``retriever`` (and ``predictor`` for /predict); ``settings`` set the limits, auth and CORS."""
    if retriever.settings.k > settings.max_k:
        # A request that leaves k out gets retrieval.k passages: the limit must hold for it too.
        raise ConfigError(
            f"retrieval.k={retriever.settings.k} is over serve.max_k={settings.max_k}: lower retrieval.k (-k) or "
            "raise serve.max_k (--max-k)"
        )
    if (
        predictor is not None
        and predictor.run.model.strategy.uses_passages
        and predictor.run.model.spec.k > settings.max_k
    ):
        # /predict retrieves the model's own k for each input (and returns them with explain).
        raise ConfigError(
            f"the model in {predictor.run.folder} reads k={predictor.run.model.spec.k} passages an input, over "
            f"serve.max_k={settings.max_k}: raise serve.max_k (--max-k)"
        )
    docs_open = settings.token is None or settings.open_docs
    batcher: Batcher[Any, list[Any]] = Batcher(
        api_runner(retriever, predictor), settings.batch_size, settings.batch_wait_ms / 1000, settings.queue_size
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The encoder, the models and the libraries behind them (some 450,000 objects with the packaged encoder)
        # live as long as the app: out of the collector's reach, since a full collection walking them held every
        # request in flight for about 190 ms (most of serve's p99 under load, measured).
        gc.collect()
        gc.freeze()
        yield
        await asyncio.to_thread(batcher.close)
        gc.unfreeze()

    app = FastAPI(
        title="ralm-es",
        version=__version__,
        description="Top-k passages from Elasticsearch by BM25, kNN or hybrid search, and predictions of a "
        "retrieval-augmented model.",
        openapi_url="/openapi.json" if docs_open else None,
        docs_url="/docs" if docs_open else None,
        redoc_url="/redoc" if docs_open else None,
        lifespan=lifespan,
    )
    protected = [Depends(bearer_auth(settings.token))] if settings.token is not None else []
    if not docs_open:
        _protected_docs(app, protected)

    async def batched(key: SearchKey | PredictKey, payload: Any, size: int) -> list[Any]:
        try:
            return await batcher.submit(key, payload, size)
        except QueueFull as exc:
            raise HTTPException(503, f"server busy: {exc}", headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    @app.exception_handler(RequestValidationError)
    def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(RalmError)
    def library_error(request: Request, exc: RalmError) -> JSONResponse:
        return SafeJSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ApiError)
    def elastic_error(request: Request, exc: ApiError) -> JSONResponse:
        status = 503 if exc.meta.status >= 500 or exc.meta.status == 429 else 400
        # The line the command line prints for the same refusal.
        detail = f"Elasticsearch refused the request: {describe_api_error(exc)}"
        return SafeJSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(TransportError)
    def unreachable(request: Request, exc: TransportError) -> JSONResponse:
        return JSONResponse({"detail": f"Elasticsearch is unavailable ({type(exc).__name__})"}, status_code=503)

    def search_key(body: m.QueryOptions) -> SearchKey:
        filters = json.dumps([f.model_dump() for f in body.filters], sort_keys=True)
        return SearchKey(mode=body.mode or retriever.settings.mode, k=body.k, filters=filters)

    @app.post("/search", response_model=m.SearchOut, dependencies=protected, responses=ERRORS)
    async def search(body: m.SearchIn) -> m.SearchOut:
        """The top-k passages for one query (the hits of ``ralm-es search --json``)."""
        check_request(settings, [body.text], body.k)
        key = search_key(body)
        (hits,) = await batched(key, Queries([body.text], [body.exclude_ids], _filters(body.filters), [None]), 1)
        return m.SearchOut(mode=key.mode, hits=[m.HitOut.model_validate(h, from_attributes=True) for h in hits])

    @app.post("/retrieve", response_model=m.RetrieveOut, dependencies=protected, responses=ERRORS)
    async def retrieve(body: m.RetrieveIn) -> m.RetrieveOut:
        """The top-k passages for each of a batch of inputs, in one ``search_many`` call."""
        check_request(settings, [item.text for item in body.inputs], body.k)
        for i, item in enumerate(body.inputs):
            # Refused here, naming the input, rather than by the batch's search, which cannot say which one.
            try:
                check_query(item.text)
            except RetrievalError as exc:
                raise HTTPException(400, f"inputs[{i}]: {exc}") from None
        key = search_key(body)
        queries = Queries(
            [item.text for item in body.inputs],
            [item.exclude_ids for item in body.inputs],
            _filters(body.filters),
            [item.id for item in body.inputs],
        )
        found = await batched(key, queries, len(body.inputs))
        results = [
            m.RetrieveResult(id=item.id, hits=[m.HitOut.model_validate(h, from_attributes=True) for h in hits])
            for item, hits in zip(body.inputs, found, strict=True)
        ]
        return m.RetrieveOut(mode=key.mode, results=results)

    @app.post(
        "/predict",
        response_model=m.PredictOut,
        response_model_exclude_none=True,
        dependencies=protected,
        responses={**ERRORS, 404: {"model": m.ErrorOut, "description": "No model loaded (serve --model)."}},
    )
    async def predict(body: m.PredictIn) -> m.PredictOut:
        """Entities (NER) or a class for each input, with the trained run given to ``ralm-es serve --model``."""
        if predictor is None:
            raise HTTPException(404, "no model loaded: start the server with --model RUN_DIR")
        texts = [" ".join(item.words) if isinstance(item, m.PredictWords) else item.text for item in body.inputs]
        pairs = [item.text_pair if isinstance(item, m.PredictText) else None for item in body.inputs]
        check_request(settings, [f"{text} {pair or ''}".strip() for text, pair in zip(texts, pairs, strict=True)])
        inputs = []
        for i, (text, pair, item) in enumerate(zip(texts, pairs, body.inputs, strict=True)):
            if not text.split():
                raise HTTPException(422, f"inputs[{i}]: empty text")
            try:
                # A model without passages never meets the retriever's check; its tokenizer cannot take surrogates.
                check_query(f"{text} {pair or ''}")
            except RetrievalError as exc:
                raise HTTPException(422, f"inputs[{i}]: {exc}") from None
            pair_words = pair.split() if pair else None
            # Positions given here: in a batch with other requests the predictor would number inputs batch-wide.
            inputs.append(PredictInput(words=text.split(), id=item.id, pair_words=pair_words, fallback_id=str(i)))
        records = await batched(PredictKey(body.explain), inputs, len(inputs))
        predictions = [m.PredictionOut.model_validate(r, from_attributes=True) for r in records]
        return m.PredictOut(task=predictor.task, predictions=predictions)

    @app.get("/health", response_model=m.HealthOut, responses={503: {"model": m.HealthOut}})
    def health(response: Response) -> m.HealthOut:
        """Store, index, model and queue state; 503 when the store cannot be reached (for load balancers)."""
        state = retriever.backend.health()
        cluster: dict[str, Any] = {"reachable": state.reachable, "name": state.name, "status": state.status}
        if state.error is not None:
            cluster["error"] = state.error
        index: dict[str, Any] = {"mode": retriever.settings.mode}
        if retriever.encoder is not None:
            encoder = retriever.encoder
            index["encoder"] = {"name": encoder.name, "dim": encoder.dim, "runtime": encoder.runtime}
        if state.reachable:
            try:
                info = retriever.backend.info()
                index.update(name=info.index, count=info.count, dims=info.dims)
            except RalmError as exc:
                index["error"] = str(exc)
        else:
            response.status_code = 503
        model = {"loaded": True, **predictor.info()} if predictor is not None else {"loaded": False}
        status = "ok" if state.reachable else "unavailable"
        queue = {"waiting": batcher.waiting, "size": settings.queue_size, "batch_size": settings.batch_size}
        return m.HealthOut(
            status=status,
            version=__version__,
            pid=os.getpid(),
            threads=torch.get_num_threads(),
            cluster=cluster,
            index=index,
            model=model,
            queue=queue,
        )

    @app.get("/indices", response_model=list[m.IndexOut], dependencies=protected, responses=ERRORS)
    def indices() -> list[m.IndexOut]:
        """The store's indices (hidden ones left out) with doc counts, aliases and vector fields."""
        return [m.IndexOut(**asdict(listing)) for listing in retriever.backend.list_indices()]

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(AccessLog)
    return app
