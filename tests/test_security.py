"""A secured node (x-pack security, HTTPS with a generated CA): basic auth, API keys, 401/403, TLS verification."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from elasticsearch import Elasticsearch

from ralm_es.config import ConnectionSettings, Secret
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.es.client import ClusterUnavailable, connect
from ralm_es.node.cluster import ClusterState, LocalCluster

RALM = [sys.executable, "-m", "ralm_es.cli.main"]
INDEX = "secure-sample"


@pytest.fixture(scope="module")
def secure(run_cluster: Callable[[str], LocalCluster]) -> Iterator[ClusterState]:
    cluster = run_cluster("pytest-secure")
    state = cluster.start(port=None, heap="512m", tls=True, quiet=True)
    yield state
    cluster.remove()


@pytest.fixture(scope="module")
def admin(secure: ClusterState) -> Elasticsearch:
    assert secure.password and secure.ca_certs
    return connect(
        ConnectionSettings(
            hosts=secure.urls, username="elastic", password=Secret(secure.password), ca_certs=secure.ca_certs
        )
    )


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RALM_ES_")}
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env={**base, **env}, timeout=600)


def ingest_args() -> list[str]:
    return ["ingest", str(sample_path("sample_corpus.jsonl")), "--index", INDEX, "--no-embed", "--quiet", "--json"]


def test_basic_auth_over_verified_tls(secure: ClusterState, admin: Elasticsearch, tmp_path: object) -> None:
    assert secure.url.startswith("https://")
    proc = run(*ingest_args(), env={**secure.env(), "RALM_ES_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    admin.indices.refresh(index=INDEX)
    assert admin.count(index=INDEX)["count"] == 60
    found = run("search", "insulin", "--index", INDEX, "--mode", "bm25", "--json", env=secure.env())
    assert found.returncode == 0 and '"doc_id": "med-01"' in found.stdout


def test_wrong_password_is_a_clear_401_without_the_secret(secure: ClusterState) -> None:
    env = {**secure.env(), "RALM_ES_PASSWORD": "not-the-password-42"}
    proc = run("search", "insulin", "--index", INDEX, "--mode", "bm25", env=env)
    assert proc.returncode == 1
    assert "rejected the credentials (401" in proc.stderr
    assert "not-the-password-42" not in proc.stderr + proc.stdout
    assert secure.password and secure.password not in proc.stderr + proc.stdout


def test_certificates_are_verified_by_default(secure: ClusterState) -> None:
    env = {k: v for k, v in secure.env().items() if k != "RALM_ES_CA_CERTS"}
    proc = run("search", "insulin", "--index", INDEX, "--mode", "bm25", env=env)
    assert proc.returncode == 1 and "TLS certificate verification failed" in proc.stderr
    with pytest.raises(ClusterUnavailable, match="TLS certificate verification failed"):
        connect(ConnectionSettings(hosts=secure.urls, username="elastic", password=Secret(secure.password or "")))


def test_read_only_user_can_search_but_not_ingest(secure: ClusterState, tmp_path: object) -> None:
    # API keys need the .security index, which this distribution cannot create (its mapping uses analysis-common),
    # so the read-only principal is a file-realm user with the built-in viewer role.
    run(*ingest_args(), env={**secure.env(), "RALM_ES_HOME": str(tmp_path)})
    cluster = LocalCluster(secure.name)
    cluster.add_user("reader", "reader-pass-123", ["viewer"])
    env = {**secure.env(), "RALM_ES_USERNAME": "reader", "RALM_ES_PASSWORD": "reader-pass-123"}
    found = run("search", "insulin", "--index", INDEX, "--mode", "bm25", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert '"doc_id": "med-01"' in found.stdout
    denied = run(*ingest_args(), env={**env, "RALM_ES_HOME": str(tmp_path)})
    assert denied.returncode == 1
    last = denied.stderr.strip().splitlines()[-1]
    assert last.startswith("ralm-es: error: Elasticsearch refused the request: 403 security_exception")
    assert "Traceback" not in denied.stderr and "reader-pass-123" not in denied.stderr


def test_a_role_with_read_alone_is_told_it_needs_view_index_metadata(secure: ClusterState, tmp_path: object) -> None:
    """Searching reads the index's mapping and aliases; a role with read alone got Elasticsearch's 403 for an admin
    action, with nothing to say which privilege was missing."""
    run(*ingest_args(), env={**secure.env(), "RALM_ES_HOME": str(tmp_path)})
    cluster = LocalCluster(secure.name)
    role = f"search_only:\n  indices:\n    - names: ['{INDEX}']\n      privileges: ['read']\n"
    for i in range(len(secure.http_ports)):
        (cluster.node_dir(i) / "config" / "roles.yml").write_text(role)
    cluster.add_user("searcher", "searcher-pass-123", ["search_only"])
    env = {**secure.env(), "RALM_ES_USERNAME": "searcher", "RALM_ES_PASSWORD": "searcher-pass-123"}
    proc = run("search", "insulin", "--index", INDEX, "--mode", "bm25", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "403 security_exception" in last and "needs view_index_metadata as well as read" in last


def test_a_bad_api_key_is_a_clear_401_without_the_key(secure: ClusterState) -> None:
    key = "bm90LWEtcmVhbC1rZXk6c2VjcmV0LXZhbHVlLTk5"
    env = {"RALM_ES_URL": secure.url, "RALM_ES_CA_CERTS": secure.ca_certs or "", "RALM_ES_API_KEY": key}
    proc = run("search", "insulin", "--index", INDEX, "--mode", "bm25", env=env)
    assert proc.returncode == 1 and "rejected the credentials (401" in proc.stderr
    assert key not in proc.stderr + proc.stdout
