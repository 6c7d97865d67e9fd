"""A local Elasticsearch cluster (one or more nodes on 127.0.0.1) for users without Docker and for tests.

Layout under the runtime root (``/var/lib/ralm-es`` when run as root, so the unprivileged service user
can reach it; the user cache otherwise)::

    elasticsearch-<version>/          unpacked distribution, shared read-only by every cluster
    clusters/<name>/state.json        ports, pids, version, credentials (mode 0600)
    clusters/<name>/node-<i>/{config,data,logs,tmp}
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ralm_es.config import cache_home
from ralm_es.errors import RalmError
from ralm_es.node import distribution
from ralm_es.node.distribution import DistributionError

SERVICE_USER = "ralm-es"
LOG_TAIL_LINES = 25
HUNSPELL_DIR = "/usr/share/hunspell"
HUNSPELL_LOCALE = "en_US"
# A cluster name becomes a folder name (and part of cluster.name): no separators, no dot-dot, no leading dash.
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class NodeError(RalmError):
    """A local node failed to start, stop or answer; the message carries the reason and log lines."""


def check_cluster_name(name: str) -> str:
    """``name`` if it is safe as a folder name under the runtime root, else ``NodeError``."""
    if not CLUSTER_NAME.fullmatch(name):
        raise NodeError(f"cluster name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return name


def runtime_root() -> Path:
    if os.environ.get("RALM_ES_RUNTIME"):
        return Path(os.environ["RALM_ES_RUNTIME"])
    if os.geteuid() == 0:
        return Path("/var/lib/ralm-es")
    return cache_home()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ClusterState:
    name: str
    version: str
    http_ports: list[int]
    transport_ports: list[int]
    pids: list[int] = field(default_factory=list)
    security: bool = False
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None

    @property
    def urls(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://127.0.0.1:{p}" for p in self.http_ports]

    def env(self) -> dict[str, str]:
        """The ``RALM_ES_*`` variables that point ralm-es at this cluster."""
        out = {"RALM_ES_URL": ",".join(self.urls)}
        if self.security and self.username and self.password:
            out.update(RALM_ES_USERNAME=self.username, RALM_ES_PASSWORD=self.password)
        # Without --tls the CA signs only the transport layer; over http:// the client has no use for it.
        if self.tls and self.ca_certs:
            out["RALM_ES_CA_CERTS"] = self.ca_certs
        return out

    @property
    def url(self) -> str:
        return self.urls[0]


def _ensure_service_user() -> tuple[int, int]:
    """The unprivileged account Elasticsearch runs as when ralm-es runs as root."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def install_hunspell(config: Path) -> bool:
    """Copy the English Hunspell dictionary (Debian's ``hunspell-en-us``) into the node's config folder, where core
    Elasticsearch's ``hunspell`` filter finds it: the stemming this distribution has without ``analysis-common``."""
    source = Path(os.environ.get("RALM_ES_HUNSPELL_DIR", HUNSPELL_DIR))
    files = [source / f"{HUNSPELL_LOCALE}.{ext}" for ext in ("aff", "dic")]
    if not all(f.is_file() for f in files):
        return False
    target = config / "hunspell" / HUNSPELL_LOCALE
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, target / f.name)
    return True


class LocalCluster:
    """Start, stop and inspect a named local cluster. A second ``start`` reuses a running one."""

    def __init__(self, name: str = "default", root: Path | None = None) -> None:
        self.name = check_cluster_name(name)
        self.root = root or runtime_root()
        self.dir = self.root / "clusters" / name
        self.state_file = self.dir / "state.json"

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise NodeError(
                f"{self.state_file}: unreadable cluster state ({exc}); "
                f"`ralm-es es stop --name {self.name} --remove` deletes the cluster"
            ) from None

    def _save(self, state: ClusterState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def running(self) -> ClusterState | None:
        state = self.state()
        if state and state.pids and all(pid_alive(p) for p in state.pids):
            return state
        return None

    def degraded(self) -> tuple[ClusterState, list[int]] | None:
        """The state and the indices of the live nodes when some of the cluster's nodes run and some do not."""
        state = self.state()
        alive = [i for i, pid in enumerate(state.pids) if pid_alive(pid)] if state else []
        if state and alive and len(alive) < len(state.pids):
            return state, alive
        return None

    # -- HTTP without the client: node management must work before any index exists ----------------
    def _get(self, state: ClusterState, path: str, timeout: float = 5.0) -> Any:
        request = urllib.request.Request(state.url + path)
        if state.security and state.username and state.password:
            token = base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=state.ca_certs) if state.tls else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())

    def health(self, state: ClusterState) -> dict[str, Any]:
        return self._get(state, "/_cluster/health")

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(
        self,
        port: int | None = 9200,
        heap: str = "1g",
        nodes: int = 1,
        security: bool = False,
        tls: bool = False,
        timeout: float = 180.0,
        quiet: bool = False,
    ) -> ClusterState:
        """Start the cluster (``port=None`` picks free ports) and wait for yellow or green health.

        ``tls`` serves HTTPS with a CA generated for this cluster (and implies ``security``).
        """
        security = security or tls
        if partly := self.degraded():
            state, alive = partly
            raise NodeError(
                f"cluster '{self.name}' has {len(alive)} of its {len(state.pids)} nodes running; "
                f"`ralm-es es stop --name {self.name}` first, then start it again"
            )
        current = self.running()
        if current is not None:
            # A running cluster is reused only as asked: a --security that was not applied would be a silent hole.
            has = {"nodes": len(current.http_ports), "security": current.security, "tls": current.tls}
            asked: dict[str, object] = {"nodes": nodes, "security": security, "tls": tls}
            if port is not None:
                has["port"], asked["port"] = current.http_ports[0], port
            if differ := [f"{key} {has[key]} (asked {value})" for key, value in asked.items() if has[key] != value]:
                raise NodeError(
                    f"cluster '{self.name}' is already running with {', '.join(differ)}; "
                    f"`ralm-es es stop --name {self.name}` first to start it as asked"
                )
            return current
        java_home = distribution.find_java()
        zip_path = distribution.fetch(quiet=quiet)
        self.root.mkdir(parents=True, exist_ok=True)
        es_home = distribution.unpack(zip_path, self.root)
        as_root = os.geteuid() == 0
        uid, gid = _ensure_service_user() if as_root else (os.getuid(), os.getgid())
        if as_root:
            # The service user must traverse every parent of its files.
            for parent in [self.root, *self.root.parents]:
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o711)

        http_ports = self._pick_ports(port, nodes)
        transport_ports = [free_port() for _ in range(nodes)]
        state = ClusterState(
            name=self.name,
            version=distribution.ES_VERSION,
            http_ports=http_ports,
            transport_ports=transport_ports,
            security=security,
            tls=tls,
            username="elastic" if security else None,
            password=secrets.token_urlsafe(18) if security else None,
        )
        if security:
            state.ca_certs = str(self._make_certs(es_home, java_home) / "ca.crt")
        if self.dir.exists():
            shutil.rmtree(self.dir / "run", ignore_errors=True)
        for i in range(nodes):
            self._write_node_config(es_home, state, i, heap)
        if as_root:
            _chown_tree(self.dir, uid, gid)
        if security:
            for i in range(nodes):
                self._set_bootstrap_password(es_home, java_home, state, i, uid, gid)
        for i in range(nodes):
            state.pids.append(self._launch(es_home, java_home, i, uid, gid, timeout))
            self._save(state)
        self._wait_healthy(state, timeout)
        return state

    def _pick_ports(self, port: int | None, nodes: int) -> list[int]:
        if port is None:
            return [free_port() for _ in range(nodes)]
        ports = list(range(port, port + nodes))
        busy = [p for p in ports if port_in_use(p)]
        if busy:
            raise NodeError(
                f"port {busy[0]} on 127.0.0.1 is already in use by another process; "
                "stop it, choose --port N, or use --port auto"
            )
        return ports

    def node_dir(self, i: int) -> Path:
        return self.dir / f"node-{i}"

    def _write_node_config(self, es_home: Path, state: ClusterState, i: int, heap: str) -> None:
        node = self.node_dir(i)
        config = node / "config"
        if config.exists():
            shutil.rmtree(config)
        shutil.copytree(es_home / "config", config)
        for sub in ("data", "logs", "tmp"):
            (node / sub).mkdir(parents=True, exist_ok=True)
        names = [f"{self.name}-{j}" for j in range(len(state.http_ports))]
        settings: dict[str, Any] = {
            "cluster.name": f"ralm-es-{self.name}",
            "node.name": names[i],
            "network.host": "127.0.0.1",
            "http.port": state.http_ports[i],
            "transport.port": state.transport_ports[i],
            "path.data": str(node / "data"),
            "path.logs": str(node / "logs"),
            "xpack.security.enabled": state.security,
            "xpack.security.http.ssl.enabled": state.tls,
            # Ingest and search on a laptop disk should not stop at the default watermarks.
            "cluster.routing.allocation.disk.threshold_enabled": False,
        }
        if len(state.http_ports) == 1:
            settings["discovery.type"] = "single-node"
        else:
            settings["discovery.seed_hosts"] = [f"127.0.0.1:{p}" for p in state.transport_ports]
            settings["cluster.initial_master_nodes"] = names
        if state.security:
            shutil.copytree(self.dir / "certs", config / "certs")
            tls_files = {
                "key": "certs/node.key",
                "certificate": "certs/node.crt",
                "certificate_authorities": ["certs/ca.crt"],
            }
            if state.tls:
                settings.update({f"xpack.security.http.ssl.{k}": v for k, v in tls_files.items()})
            if len(state.http_ports) > 1:
                # Nodes of a secured cluster must talk over TLS.
                settings["xpack.security.transport.ssl.enabled"] = True
                settings["xpack.security.transport.ssl.verification_mode"] = "certificate"
                settings.update({f"xpack.security.transport.ssl.{k}": v for k, v in tls_files.items()})
        install_hunspell(config)
        lines = [f"{k}: {json.dumps(v)}" for k, v in settings.items()]
        (config / "elasticsearch.yml").write_text("\n".join(lines) + "\n")
        (config / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap}\n-Xmx{heap}\n")

    def _env(self, java_home: Path, i: int) -> dict[str, str]:
        node = self.node_dir(i)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ES_", "JAVA_"))}
        env.update(
            ES_JAVA_HOME=str(java_home),
            ES_PATH_CONF=str(node / "config"),
            ES_TMPDIR=str(node / "tmp"),
            HOME=str(node),
        )
        return env

    def _make_certs(self, es_home: Path, java_home: Path) -> Path:
        """A CA and a node certificate for 127.0.0.1/localhost (elasticsearch-certutil), made once per cluster."""
        certs = self.dir / "certs"
        if (certs / "node.key").exists():
            return certs
        certs.mkdir(parents=True, exist_ok=True)
        tool = str(es_home / "bin" / "elasticsearch-certutil")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ES_", "JAVA_"))}
        env["ES_JAVA_HOME"] = str(java_home)
        ca_zip, node_zip = certs / "ca.zip", certs / "node.zip"
        steps = [
            [tool, "ca", "--pem", "--out", str(ca_zip), "--silent"],
            [
                tool,
                "cert",
                "--pem",
                "--ca-cert",
                str(certs / "ca" / "ca.crt"),
                "--ca-key",
                str(certs / "ca" / "ca.key"),
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
                "--name",
                "node",
                "--out",
                str(node_zip),
                "--silent",
            ],
        ]
        for step, archive in zip(steps, (ca_zip, node_zip), strict=True):
            proc = subprocess.run(step, env=env, capture_output=True, text=True, timeout=180)
            if proc.returncode != 0:
                raise NodeError(f"elasticsearch-certutil failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(certs)
        for name in ("ca.crt", "ca.key"):
            (certs / "ca" / name).replace(certs / name)
        for name in ("node.crt", "node.key"):
            (certs / "node" / name).replace(certs / name)
        for key in ("ca.key", "node.key"):
            (certs / key).chmod(0o600)
        for leftover in (ca_zip, node_zip):
            leftover.unlink()
        (certs / "ca").rmdir()
        (certs / "node").rmdir()
        return certs

    def _set_bootstrap_password(
        self, es_home: Path, java_home: Path, state: ClusterState, i: int, uid: int, gid: int
    ) -> None:
        keystore = es_home / "bin" / "elasticsearch-keystore"
        env = self._env(java_home, i)
        kwargs: dict[str, Any] = {"env": env, "capture_output": True, "text": True, "timeout": 120}
        if os.geteuid() == 0:
            kwargs.update(user=uid, group=gid)
        if not (self.node_dir(i) / "config" / "elasticsearch.keystore").exists():
            created = subprocess.run([str(keystore), "create"], **kwargs)
            if created.returncode != 0:
                raise NodeError(f"could not create the keystore of node {i}: {created.stderr.strip()}")
        proc = subprocess.run(
            [str(keystore), "add", "--force", "--stdin", "bootstrap.password"],
            input=state.password,
            **kwargs,
        )
        if proc.returncode != 0:
            raise NodeError(f"could not set the bootstrap password: {proc.stderr.strip()}")

    def _launch(self, es_home: Path, java_home: Path, i: int, uid: int, gid: int, timeout: float) -> int:
        node = self.node_dir(i)
        pid_file = node / "elasticsearch.pid"
        pid_file.unlink(missing_ok=True)
        startup_log = node / "logs" / "startup.log"
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            kwargs.update(user=uid, group=gid, extra_groups=[])
        with startup_log.open("w") as out:
            try:
                proc = subprocess.run(
                    [str(es_home / "bin" / "elasticsearch"), "-d", "-p", str(pid_file)],
                    env=self._env(java_home, i),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    **kwargs,
                )
            except subprocess.TimeoutExpired:
                raise NodeError(
                    f"Elasticsearch node {i} did not start within {timeout:g} s (--timeout); its log: {startup_log}"
                ) from None
        if proc.returncode != 0 or not pid_file.exists():
            raise NodeError(
                f"Elasticsearch node {i} exited with status {proc.returncode} while starting.\n" + self.log_tail(i)
            )
        return int(pid_file.read_text().strip())

    def add_user(self, username: str, password: str, roles: list[str]) -> None:
        """A file-realm user on every node (works without the .security index, which this distribution cannot
        create: its mapping needs the analysis-common module)."""
        state = self.running()
        if state is None or not state.security:
            raise NodeError(f"cluster '{self.name}' is not running with security; start it with --security")
        es_home = distribution.unpack(distribution.fetch(quiet=True), self.root)
        java_home = distribution.find_java()
        kwargs: dict[str, Any] = {"env": None, "capture_output": True, "text": True, "timeout": 120}
        if os.geteuid() == 0:
            uid, gid = _ensure_service_user()
            kwargs.update(user=uid, group=gid)
        for i in range(len(state.http_ports)):
            kwargs["env"] = self._env(java_home, i)
            tool = str(es_home / "bin" / "elasticsearch-users")
            subprocess.run([tool, "userdel", username], **kwargs)
            proc = subprocess.run([tool, "useradd", username, "-p", password, "-r", ",".join(roles)], **kwargs)
            if proc.returncode != 0:
                raise NodeError(f"could not add user '{username}': {(proc.stderr or proc.stdout).strip()}")
        # The file realm rereads its files every few seconds: return once the new user can log in.
        as_user = replace(state, username=username, password=password)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._get(as_user, "/_security/_authenticate")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or time.monotonic() > deadline:
                    raise NodeError(f"user '{username}' was added but cannot log in ({exc.code})") from None
            time.sleep(0.5)

    def log_tail(self, i: int = 0, lines: int = LOG_TAIL_LINES) -> str:
        logs = self.node_dir(i) / "logs"
        chunks = []
        for path in (logs / "startup.log", logs / f"ralm-es-{self.name}.log"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                if tail:
                    chunks.append(f"--- last lines of {path} ---\n" + "\n".join(tail))
        return "\n".join(chunks) or f"(no log lines under {logs})"

    def _wait_healthy(self, state: ClusterState, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            dead = [i for i, pid in enumerate(state.pids) if not pid_alive(pid)]
            if dead:
                raise NodeError(f"Elasticsearch node {dead[0]} died while starting.\n" + self.log_tail(dead[0]))
            try:
                health = self._get(state, "/_cluster/health?wait_for_status=yellow&timeout=2s")
                if health.get("status") in ("yellow", "green") and health.get("number_of_nodes") == len(state.pids):
                    return
                last_error = f"health {health.get('status')} with {health.get('number_of_nodes')} nodes"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(1)
        self.stop()
        raise NodeError(f"cluster not healthy after {timeout:.0f}s ({last_error}).\n" + self.log_tail())

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM every node, wait, then SIGKILL stragglers; True when something was running."""
        state = self.state()
        if state is None:
            return False
        alive = [p for p in state.pids if pid_alive(p)]
        for pid in alive:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in alive):
            time.sleep(0.2)
        for pid in alive:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        while any(port_in_use(p) for p in state.http_ports) and time.monotonic() < deadline + 5:
            time.sleep(0.2)
        state.pids = []
        self._save(state)
        return bool(alive)

    def remove(self, timeout: float = 30.0) -> bool:
        """Stop the cluster and delete its folder: data, logs, certificates and state; True when it ran."""
        try:
            stopped = self.stop(timeout=timeout)
        except NodeError:
            # Unreadable state names no processes to stop; the folder still goes.
            stopped = False
        shutil.rmtree(self.dir, ignore_errors=True)
        return stopped

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``, as a crash would (the fault tests use this)."""
        state = self.running() or self.state()
        if state is None or i >= len(state.pids):
            raise NodeError(f"cluster '{self.name}' has no node {i}")
        if pid_alive(state.pids[i]):
            os.kill(state.pids[i], signal.SIGKILL)

    def status(self) -> dict[str, Any]:
        """``{"url", "version", "health", "nodes"}``; health is ``stopped`` or ``unreachable`` when so."""
        state = self.running()
        if partly := self.degraded():
            state, alive = partly
            health = f"degraded ({len(alive)} of {len(state.pids)} nodes running; es stop, then es start)"
            return {"url": state.urls[alive[0]], "version": state.version, "health": health, "nodes": len(alive)}
        if state is None:
            return {"url": None, "version": distribution.ES_VERSION, "health": "stopped", "nodes": 0}
        try:
            health = self.health(state)
            nodes = self._get(state, "/_nodes/_all/http?filter_path=nodes.*.version")
            versions = sorted({n["version"] for n in nodes.get("nodes", {}).values()})
            return {
                "url": state.url,
                "version": ",".join(versions) or state.version,
                "health": health["status"],
                "nodes": health["number_of_nodes"],
            }
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return {"url": state.url, "version": state.version, "health": f"unreachable ({exc})", "nodes": 0}


__all__ = [
    "ClusterState",
    "DistributionError",
    "LocalCluster",
    "NodeError",
    "check_cluster_name",
    "free_port",
    "runtime_root",
]
