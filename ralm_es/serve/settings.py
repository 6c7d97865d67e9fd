"""What the REST service allows and exposes; from the config file's ``serve:`` section and ``ralm-es serve`` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ralm_es.config import ConfigError, Secret, check_bounds

TOKEN_ENV = "RALM_ES_API_TOKEN"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    # Requests beyond these limits are refused (k: 422; batch, text and body size: 413).
    max_k: int = 100
    max_batch: int = 64
    max_text_chars: int = 4000
    max_body_bytes: int = 1_048_576
    # Browser origins allowed by CORS; empty keeps CORS off.
    cors_origins: list[str] = field(default_factory=list)
    # Bearer token every endpoint but /health asks for; None leaves the API open. Read from RALM_ES_API_TOKEN.
    token: Secret | None = None
    # With a token, /docs, /redoc and /openapi.json want it too unless this opens them (a browser cannot send it).
    open_docs: bool = False
    # Seconds in-flight requests get to finish on shutdown (SIGINT/SIGTERM).
    graceful_timeout: float = 10.0
    # Concurrent /search, /retrieve and /predict requests are answered together, at most this many queries (or
    # inputs) in one encoder batch and one _msearch; 1 answers them one at a time.
    batch_size: int = 64
    # How long a batch waits for more requests, once requests were seen to overlap (a lone client never waits).
    batch_wait_ms: float = 5.0
    # Requests waiting for a batch; one more is refused with 503 and Retry-After.
    queue_size: int = 256
    # Processes accepting on the one listening socket, each with its own encoder, retriever and batch queue.
    workers: int = 1

    def __post_init__(self) -> None:
        # The limits hold on every path in: a config file's serve section and the Python API skip the flags' checks.
        limits = ("max_k", "max_batch", "max_text_chars", "max_body_bytes")
        check_bounds("serve", self, (*limits, "batch_size", "queue_size", "workers"), 1)
        check_bounds("serve", self, ("batch_wait_ms", "graceful_timeout"), 0)
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"serve.port must be between 1 and 65535, got {self.port}")

    @property
    def worker_threads(self) -> int:
        """CPU threads of each worker's encoder and model: the cores shared out, so that the workers do not
        contend (two workers at every core each served new queries at under half one worker's rate on 2 cores)."""
        return max(1, (os.cpu_count() or 1) // self.workers)
