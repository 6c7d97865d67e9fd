"""The command line: help lists the commands, secrets stay out of output, an absent cluster names the fix."""

from __future__ import annotations

import os
import subprocess
import sys

from ralm_es.es.node import free_port

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
