"""The command line: help, secrets kept out of output, connection options before or after the command, `es env`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ralm_es.config import ConfigError
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.node.cluster import free_port

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=env or os.environ.copy(), timeout=120)


def test_help_lists_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("es", "ingest"):
        assert f"  {command} " in proc.stdout


def test_secrets_not_in_help_or_errors() -> None:
    port = free_port()
    env = {
        **os.environ,
        "RALM_ES_URL": f"http://127.0.0.1:{port}",
        "RALM_ES_PASSWORD": "hunter2-secret",
        "RALM_ES_USERNAME": "bob",
        "RALM_ES_MAX_RETRIES": "0",
    }
    help_text = run("--help", env=env).stdout + run("ingest", "--help", env=env).stdout
    assert "hunter2-secret" not in help_text
    proc = run("ingest", "--no-embed", "README.md", env=env)
    assert proc.returncode == 1
    assert "hunter2-secret" not in proc.stderr + proc.stdout
    assert f"nothing answers at http://127.0.0.1:{port}" in proc.stderr
    assert "ralm-es es start" in proc.stderr and "--es-url" in proc.stderr


SAMPLE = str(sample_path("sample_corpus.jsonl"))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any RALM_ES_* setting of the caller, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RALM_ES_")}, **extra}


def fake_secured_cluster(runtime: Path, name: str, es_url: str) -> Path:
    """State of a running `es start --security` cluster (no --tls) whose HTTP port is the session node's.

    Security is off on the session node, so it ignores the credentials; what matters is what `es env` prints.
    The test process stands in for the node's pid, so the cluster counts as running.
    """
    ca = runtime / "clusters" / name / "certs" / "ca.crt"
    ca.parent.mkdir(parents=True)
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    state = {
        "name": name,
        "version": "8.19.21",
        "http_ports": [int(es_url.rsplit(":", 1)[1])],
        "transport_ports": [free_port()],
        "pids": [os.getpid()],
        "security": True,
        "tls": False,
        "username": "elastic",
        "password": "pw-from-state",
        "ca_certs": str(ca),
    }
    (runtime / "clusters" / name / "state.json").write_text(json.dumps(state))
    return ca


def test_eval_es_env_of_a_secured_http_cluster_then_commands_work(es_url: str, index_name: str, tmp_path: Path) -> None:
    fake_secured_cluster(tmp_path, "sec", es_url)
    env = clean_env(RALM_ES_RUNTIME=str(tmp_path), RALM_ES_HOME=str(tmp_path / "home"))
    exports = run("es", "env", "--name", "sec", env=env)
    assert exports.returncode == 0, exports.stderr
    assert "RALM_ES_PASSWORD=pw-from-state" in exports.stdout and "RALM_ES_CA_CERTS" not in exports.stdout
    ralm = " ".join(shlex.quote(part) for part in RALM)
    script = (
        f'eval "$({ralm} es env --name sec)" && '
        f"{ralm} ingest {shlex.quote(SAMPLE)} --index {index_name} --no-embed --quiet && "
        f"{ralm} search insulin --index {index_name} --mode bm25 --json"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)[0]["doc_id"] == "med-01"


def test_a_ca_bundle_with_an_http_url_is_ignored_with_one_warning(es_url: str, index_name: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = clean_env(RALM_ES_URL=es_url, RALM_ES_CA_CERTS=str(ca), RALM_ES_HOME=str(tmp_path))
    proc = run("ingest", SAMPLE, "--index", index_name, "--no-embed", "--quiet", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "RALM_ES_CA_CERTS" in line]
    assert warnings == [
        "ralm-es: WARNING: RALM_ES_CA_CERTS (es.ca_certs): ignored, the Elasticsearch URL is http:// (no TLS)"
    ]
    assert json.loads(proc.stdout)["indexed"] == 60


def test_connection_options_work_after_the_subcommand(es_url: str, index_name: str, tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    env = clean_env(RALM_ES_URL=nobody, RALM_ES_HOME=str(tmp_path), RALM_ES_MAX_RETRIES="0")
    after = ["--es-url", es_url, "--es-timeout", "20", "--es-retries", "1", "--es-no-verify-certs"]
    ingested = run("ingest", SAMPLE, "--index", index_name, "--no-embed", "--quiet", *after, env=env)
    assert ingested.returncode == 0, ingested.stderr
    # After the subcommand wins over before it, which wins over the environment.
    found = run("--es-url", nobody, "search", "insulin", "--index", index_name, "--mode", "bm25", *after, env=env)
    assert found.returncode == 0, found.stderr
    assert "med-01" in found.stdout
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"es:\n  hosts: [{es_url}]\n")
    no_url = clean_env(RALM_ES_HOME=str(tmp_path))
    found = run("search", "insulin", "--index", index_name, "--mode", "bm25", "--config", str(cfg), env=no_url)
    assert found.returncode == 0 and "med-01" in found.stdout, found.stderr
    # evaluate reads the config's es: section, reaches the cluster, then reads (and rejects) the qrels file.
    evaluated = run(
        "evaluate",
        "--queries",
        SAMPLE,
        "--qrels",
        str(cfg),
        "--index",
        index_name,
        "--mode",
        "bm25",
        "--config",
        str(cfg),
        env=no_url,
    )
    assert evaluated.returncode == 1
    assert evaluated.stderr.startswith(f"ralm-es: error: {cfg}:1: expected 3 fields"), evaluated.stderr
    bad = run("retrieve", SAMPLE, "--out", str(tmp_path / "c.jsonl"), "--es-timeout", "-1", env=env)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "ralm-es: error: --es-timeout (es.request_timeout): expected a number of seconds above 0, got -1.0"
    )


def test_a_bad_connection_setting_does_not_stop_the_local_backend(tmp_path: Path) -> None:
    env = clean_env(RALM_ES_URL="not a url", RALM_ES_HOME=str(tmp_path))
    ingested = run("ingest", SAMPLE, "--backend", "local", "--index", "s", "--no-embed", "--quiet", env=env)
    assert ingested.returncode == 0, ingested.stderr
    found = run("search", "insulin", "--backend", "local", "--index", "s", "--mode", "bm25", env=env)
    assert found.returncode == 0 and "med-01" in found.stdout, found.stderr


@pytest.mark.parametrize("index", ["..", ".", "./", "sub/.."])
def test_a_local_index_is_never_the_current_or_parent_folder(index: str, tmp_path: Path) -> None:
    work = tmp_path / "a" / "b"
    (work / "sub").mkdir(parents=True)
    env = clean_env(RALM_ES_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [*RALM, "ingest", SAMPLE, "--backend", "local", "--index", index, "--no-embed", "--quiet"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=work,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"ralm-es: error: --index {index!r}: a local index is a folder of its own; name it, e.g. ./my-index"
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "sub"]


def test_a_bare_local_index_name_stays_under_the_local_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ralm_es.cli.context import local_index_path

    monkeypatch.setenv("RALM_ES_HOME", str(tmp_path))
    assert local_index_path("a..b") == tmp_path / "local" / "a..b"
    assert local_index_path("./x") == Path("./x")
    with pytest.raises(ConfigError, match="--index: a local index needs a name"):
        local_index_path("")
