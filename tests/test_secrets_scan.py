"""No secret leaks: a realistic flow with a password, an API key and a serve token set in the environment and a
config file (ingest, search, errors, help, a short training run, ``ralm-es serve`` with its access log), then
every output, log, run folder, local index and checkpoint it produced is scanned for the secrets, raw and as an
HTTP basic-auth header would carry them."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
import pytest
import yaml
from elasticsearch import Elasticsearch

from ralm_es.cli.main import main
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.node.cluster import free_port

PASSWORD = "pw-Zq8vK2-not-for-logs"
API_KEY = "ak-Lm3xR7-not-for-logs"
TOKEN = "tok-Hy5wP1-not-for-logs"
FILE_PASSWORD = "pw-file-Cc4nB9-not-for-logs"
WRONG_TOKEN = "tok-wrong-Vv6tG2-not-for-logs"
USERNAME = "scan-user"
RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def forms(secret: str) -> list[str]:
    """The secret itself and as it travels in an ``Authorization`` header (basic auth or ``ApiKey``)."""
    basic = base64.b64encode(f"{USERNAME}:{secret}".encode()).decode()
    return [secret, basic, base64.b64encode(secret.encode()).decode()]


SECRETS = [form for secret in (PASSWORD, API_KEY, TOKEN, FILE_PASSWORD, WRONG_TOKEN) for form in forms(secret)]


class Flow:
    """Runs ``ralm-es`` with the secrets in its environment and keeps every output and log line it produced."""

    def __init__(self, folder: Path, es_url: str) -> None:
        self.folder = folder
        self.outputs: list[tuple[str, str]] = []
        self.config = folder / "ralm.yaml"
        # The config file is the one place the file password may be: it is not scanned.
        self.config.write_text(yaml.safe_dump({"es": {"username": USERNAME, "password": FILE_PASSWORD}}))
        self.env = {
            "RALM_ES_URL": es_url,
            "RALM_ES_USERNAME": USERNAME,
            "RALM_ES_PASSWORD": PASSWORD,
            "RALM_ES_API_KEY": API_KEY,
            "RALM_ES_API_TOKEN": TOKEN,
            "RALM_ES_HOME": str(folder / "home"),
        }

    def run(self, *args: str, ok: bool = True) -> None:
        """``ralm-es --config FILE ARGS`` in this process through the real entry point; stdout, stderr and every
        log record at INFO and above are kept."""
        out, log = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(log)
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        code = 0
        argv = ["ralm-es", "--config", str(self.config), *args]
        try:
            with (
                mock.patch.dict(os.environ, self.env),
                mock.patch("sys.argv", argv),
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(out),
            ):
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        self.outputs.append((" ".join(args), out.getvalue() + log.getvalue()))
        assert (code == 0) == ok, out.getvalue()


@pytest.fixture(scope="module")
def flow(
    es_url: str, es_client: Elasticsearch, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flow]:
    flow = Flow(tmp_path_factory.mktemp("secrets"), es_url)
    index = f"t-secrets-{uuid.uuid4().hex[:8]}"
    corpus = str(sample_path("sample_corpus.jsonl"))
    model = ["--model", str(tiny_model_dir)]
    for command in ([], ["ingest"], ["search"], ["serve"], ["train"], ["es"]):
        flow.run(*command, "--help")
    flow.run("ingest", corpus, "--index", index, *model, "--quiet", "--json")
    flow.run("ingest", corpus, "--backend", "local", "--index", str(flow.folder / "local"), "--no-embed", "--quiet")
    flow.run("search", "insulin", "--index", index, *model, "--json")
    flow.run("search", "insulin", "--index", index, "--mode", "bm25", "--explain-dsl")
    # Errors: a missing index, an unreachable cluster, a bad setting, a missing file.
    flow.run("search", "insulin", "--index", f"{index}-missing", "--mode", "bm25", ok=False)
    flow.run("--es-url", f"http://127.0.0.1:{free_port()}", "--es-retries", "0", "search", "x", ok=False)
    flow.run("ingest", corpus, "--index", index, "--set", "bulk_dogs=5", ok=False)
    flow.run("ingest", str(flow.folder / "absent.jsonl"), "--index", index, ok=False)
    train_config = flow.folder / "train.yaml"
    ner = str(sample_path("sample_ner.txt"))
    train_config.write_text(
        yaml.safe_dump(
            {
                "data": {"train": ner, "dev": ner, "limit": 16},
                "model": {"encoder": str(tiny_model_dir), "fusion": "none", "max_length": 32},
                "train": {"max_steps": 2, "batch_size": 4, "eval_every": 1, "device": "cpu", "threads": 1},
                "run": {"out": str(flow.folder / "run"), "progress": False},
            }
        )
    )
    flow.run("train", "--config", str(train_config), "--json")
    serve(flow, index)
    yield flow
    created = es_client.indices.get(index=f"{index}*").body
    if created:
        es_client.indices.delete(index=",".join(created))


def serve(flow: Flow, index: str) -> None:
    """``ralm-es serve`` answering good, unauthorised and invalid requests; its stderr holds the access log."""
    port = free_port()
    args = ["--config", str(flow.config), "serve", "--index", index, "--mode", "bm25", "--port", str(port)]
    proc = subprocess.Popen(
        [*RALM, *args], env={**os.environ, **flow.env}, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{url}/search", json={"text": "insulin"}, headers=good, timeout=30).status_code == 200
        wrong = httpx.post(f"{url}/search?token={TOKEN}", json={"text": "x"}, headers={"Authorization": WRONG_TOKEN})
        assert wrong.status_code == 401
        flow.outputs.append(("serve 401 body", wrong.text))
        bad = httpx.post(f"{url}/retrieve", json={"inputs": []}, headers=good, timeout=30)
        assert bad.status_code == 422
        flow.outputs.append(("serve 422 body", bad.text))
        flow.outputs.append(("serve /indices", httpx.get(f"{url}/indices", headers=good, timeout=30).text))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert '"status": 401' in err, err
    flow.outputs.append(("serve log", out + err))


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_no_secret_in_any_output(flow: Flow) -> None:
    assert len(flow.outputs) >= 15
    found = {what: leaks(text) for what, text in flow.outputs if leaks(text)}
    assert found == {}


def test_no_secret_in_any_file_written(flow: Flow) -> None:
    files = [p for p in flow.folder.rglob("*") if p.is_file() and p != flow.config]
    names = {p.relative_to(flow.folder).parts[0] for p in files}
    # The run folder and the local index were written (and ingest checkpoints under RALM_ES_HOME, while running).
    assert {"run", "local", "train.yaml"} <= names
    assert (flow.folder / "run" / "config.yaml").is_file() and (flow.folder / "run" / "model.safetensors").is_file()
    found = {str(p): leaks(p.read_bytes().decode("utf-8", "replace")) for p in files}
    assert {name: secrets for name, secrets in found.items() if secrets} == {}
