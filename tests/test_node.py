"""The local cluster manager against real Elasticsearch processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ralm_es.es import distribution
from ralm_es.es.distribution import DistributionError, find_java
from ralm_es.es.node import LocalCluster, port_in_use

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=env or os.environ.copy(), timeout=300)


def test_missing_jdk_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DistributionError, match=r"no Java 17-24 runtime found"):
        find_java(env={}, search_dirs=[tmp_path])
    env = {**os.environ, "ES_JAVA_HOME": str(tmp_path)}
    proc = run_cli("es", "start", "--name", "nojdk", "--port", "auto", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ES_JAVA_HOME" in lines[0] and "needs Java 17-24" in lines[0]


def test_finds_a_supported_jdk_on_this_machine() -> None:
    major = distribution.java_version(find_java(env={}))
    assert major is not None and distribution.JAVA_MIN <= major <= distribution.JAVA_MAX


def test_start_status_reuse_stop() -> None:
    name = "pytest-lifecycle"
    proc = run_cli("es", "start", "--name", name, "--port", "auto", "--heap", "512m", "--quiet")
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    assert url.startswith("http://127.0.0.1:")
    try:
        with urllib.request.urlopen(url + "/_cluster/health", timeout=10) as resp:
            assert json.loads(resp.read())["status"] in ("green", "yellow")
        status = json.loads(run_cli("es", "status", "--name", name, "--json").stdout)
        assert status == {"url": url, "version": distribution.ES_VERSION, "health": "green", "nodes": 1}
        again = run_cli("es", "start", "--name", name, "--port", "auto")
        assert again.returncode == 0 and again.stdout.strip() == url and "already running" in again.stderr
        state = LocalCluster(name).state()
        assert state is not None
        if os.geteuid() == 0:
            # Elasticsearch refuses root: the node must run as the unprivileged service user.
            owner = Path(f"/proc/{state.pids[0]}").stat().st_uid
            assert owner != 0
    finally:
        stopped = run_cli("es", "stop", "--name", name)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    port = int(url.rsplit(":", 1)[1])
    assert not port_in_use(port)
    assert json.loads(run_cli("es", "status", "--name", name, "--json").stdout)["health"] == "stopped"
    removed = run_cli("es", "stop", "--name", name, "--remove")
    assert removed.returncode == 0 and not LocalCluster(name).dir.exists()


def test_session_node_reports_version(es_url: str) -> None:
    with urllib.request.urlopen(es_url + "/_nodes/_local?filter_path=nodes.*.version", timeout=10) as resp:
        versions = {n["version"] for n in json.loads(resp.read())["nodes"].values()}
    assert versions == {distribution.ES_VERSION}
