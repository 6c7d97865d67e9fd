"""The local cluster manager against real Elasticsearch processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ralm_es.node import distribution
from ralm_es.node.cluster import ClusterState, LocalCluster, NodeError, port_in_use
from ralm_es.node.distribution import DistributionError, find_java

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


def test_a_node_that_does_not_start_in_time_is_one_line(tmp_path: Path) -> None:
    cluster = LocalCluster("slow", root=tmp_path)
    launcher = tmp_path / "es" / "bin" / "elasticsearch"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\nexec sleep 30\n")
    launcher.chmod(0o755)
    (cluster.node_dir(0) / "logs").mkdir(parents=True)
    with pytest.raises(NodeError, match=r"^Elasticsearch node 0 did not start within 1 s \(--timeout\); its log: "):
        cluster._launch(tmp_path / "es", tmp_path, 0, os.getuid(), os.getgid(), timeout=1.0)


def test_finds_a_supported_jdk_on_this_machine() -> None:
    major = distribution.java_version(find_java(env={}))
    assert major is not None and distribution.JAVA_MIN <= major <= distribution.JAVA_MAX


def test_start_status_reuse_stop(run_cluster: Callable[[str], LocalCluster]) -> None:
    name = run_cluster("pytest-lifecycle").name
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
        # Reused only as asked: a --security the running cluster does not have is refused, not dropped.
        secured = run_cli("es", "start", "--name", name, "--port", "auto", "--security")
        assert secured.returncode == 1 and "already running with security False (asked True)" in secured.stderr
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


@pytest.mark.parametrize("name", ["../../etc", "..", "a/b", "/tmp/x", "-rf", "", "x" * 65, "name with space"])
def test_a_cluster_name_is_never_a_path(name: str, tmp_path: Path) -> None:
    runtime = tmp_path / "a" / "runtime"
    runtime.mkdir(parents=True)
    with pytest.raises(NodeError, match="use 1-64 letters, digits"):
        LocalCluster(name, root=runtime)
    env = {**os.environ, "RALM_ES_RUNTIME": str(runtime), "RALM_ES_HOME": str(tmp_path / "home")}
    for command in (["start", "--port", "auto", "--quiet"], ["stop", "--remove"], ["status"], ["env"]):
        proc = run_cli("es", *command, "--name", name, env=env)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("ralm-es: error: Invalid value for '--name': cluster name") and "Traceback" not in line
    useradd = run_cli("es", "useradd", "bob", "--name", name, env={**env, "RALM_ES_NEW_PASSWORD": "pw-123456"})
    assert useradd.returncode == 2 and "Invalid value for '--name'" in useradd.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/runtime"]


def test_a_secured_cluster_without_tls_exports_no_ca_bundle() -> None:
    state = ClusterState(
        name="s", version="v", http_ports=[9201], transport_ports=[9301], security=True, username="elastic"
    )
    state.password, state.ca_certs = "pw", "/x/certs/ca.crt"
    assert state.env() == {
        "RALM_ES_URL": "http://127.0.0.1:9201",
        "RALM_ES_USERNAME": "elastic",
        "RALM_ES_PASSWORD": "pw",
    }
    state.tls = True
    assert state.env()["RALM_ES_CA_CERTS"] == "/x/certs/ca.crt" and state.url.startswith("https://")


def test_unreadable_cluster_state_is_one_line_and_remove_still_works(tmp_path: Path) -> None:
    cluster = LocalCluster("broken", root=tmp_path)
    cluster.dir.mkdir(parents=True)
    cluster.state_file.write_text('{"name": "broken", "from_a_future_version": 1}')
    env = {**os.environ, "RALM_ES_RUNTIME": str(tmp_path)}
    proc = run_cli("es", "status", "--name", "broken", env=env)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"ralm-es: error: {cluster.state_file}: unreadable cluster state")
    assert "es stop --name broken --remove" in line
    removed = run_cli("es", "stop", "--name", "broken", "--remove", env=env)
    assert removed.returncode == 0 and not cluster.dir.exists()


def test_a_cluster_with_a_dead_node_is_reported_degraded_not_stopped(tmp_path: Path) -> None:
    cluster = LocalCluster("partly", root=tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    # Node 0 is this (live) process, node 1 a process that has exited.
    state = ClusterState("partly", "8.19.21", [59990, 59991], [59992, 59993], pids=[os.getpid(), finished.pid])
    cluster._save(state)
    status = cluster.status()
    assert status["health"].startswith("degraded (1 of 2 nodes running")
    assert status["url"] == "http://127.0.0.1:59990" and status["nodes"] == 1
    with pytest.raises(NodeError, match=r"has 1 of its 2 nodes running; `ralm-es es stop --name partly` first"):
        cluster.start(port=None, quiet=True)
