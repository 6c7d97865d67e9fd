"""The Elasticsearch distribution ralm-es runs locally: which version, where it comes from, which Java.

Elastic publishes its integration-test zip to Maven Central with checksums beside it. 8.19 is the newest
line whose zips carry a published checksum there (the 9.x zips on Maven Central have none), and it runs
on Java 17 to 24; the Python client is pinned to the same major in setup.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from ralm_es.config import cache_home
from ralm_es.errors import RalmError

ES_VERSION = "8.19.21"
JAVA_MIN, JAVA_MAX = 17, 24
MAVEN_URL = "https://repo1.maven.org/maven2"
ARTIFACT_PATH = "org/elasticsearch/distribution/integ-test-zip/elasticsearch"
JVM_DIRS = (Path("/usr/lib/jvm"),)


class DistributionError(RalmError):
    """The distribution could not be fetched, verified or unpacked, or no suitable Java exists."""


def artifact_url(version: str = ES_VERSION) -> str:
    base = os.environ.get("RALM_ES_MAVEN_URL", MAVEN_URL).rstrip("/")
    return f"{base}/{ARTIFACT_PATH}/{version}/elasticsearch-{version}.zip"


def _download(url: str, dest: Path, quiet: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            with (
                dest.open("wb") as out,
                tqdm(total=total or None, unit="B", unit_scale=True, desc=f"fetch {dest.name}", disable=quiet) as bar,
            ):
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise DistributionError(f"cannot fetch {url}: {exc}") from exc


def fetch(version: str = ES_VERSION, quiet: bool = False) -> Path:
    """The verified zip in the cache, downloading it (and its published SHA-512) when absent."""
    dist = cache_home() / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    zip_path = dist / f"elasticsearch-{version}.zip"
    sha_path = dist / f"elasticsearch-{version}.zip.sha512"
    if zip_path.exists() and sha_path.exists():
        return zip_path
    url = artifact_url(version)
    tmp_sha = sha_path.with_suffix(".part")
    _download(url + ".sha512", tmp_sha, quiet=True)
    expected = tmp_sha.read_text().split()[0].strip().lower()
    tmp_zip = zip_path.with_suffix(".part")
    _download(url, tmp_zip, quiet)
    with tmp_zip.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha512")
    if digest.hexdigest() != expected:
        tmp_zip.unlink()
        raise DistributionError(
            f"checksum mismatch for {url}: expected sha512 {expected[:16]}…, got {digest.hexdigest()[:16]}…"
        )
    tmp_zip.replace(zip_path)
    tmp_sha.replace(sha_path)
    return zip_path


def unpack(zip_path: Path, root: Path) -> Path:
    """Extract the zip under ``root`` once (keeping executable bits) and return the ES home folder."""
    with zipfile.ZipFile(zip_path) as zf:
        top = zf.namelist()[0].split("/")[0]
        home = root / top
        if (home / "bin" / "elasticsearch").exists():
            return home
        staging = root / f".{top}.partial"
        zf.extractall(staging)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode:
                (staging / info.filename).chmod(mode & 0o7777)
    (staging / top).replace(home)
    staging.rmdir()
    return home


def java_version(java_home: Path) -> int | None:
    """Major version of the JDK at ``java_home``, from its ``release`` file or ``java -version``."""
    release = java_home / "release"
    text = ""
    if release.is_file():
        text = release.read_text(errors="replace")
    elif (java_home / "bin" / "java").is_file():
        proc = subprocess.run([str(java_home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30)
        text = proc.stderr + proc.stdout
    match = re.search(r'version\s*=?\s*"(\d+)(?:\.(\d+))?', text, re.IGNORECASE)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def find_java(env: Mapping[str, str] | None = None, search_dirs: Sequence[Path] = JVM_DIRS) -> Path:
    """A JDK that runs the pinned Elasticsearch: ``ES_JAVA_HOME``, ``JAVA_HOME``, then ``/usr/lib/jvm``."""
    env = os.environ if env is None else env
    wanted = f"Java {JAVA_MIN}-{JAVA_MAX}"
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        if env.get(var):
            home = Path(env[var])
            major = java_version(home)
            if major is not None and JAVA_MIN <= major <= JAVA_MAX:
                return home
            if var == "ES_JAVA_HOME":
                found = f"Java {major}" if major else "no Java"
                raise DistributionError(f"ES_JAVA_HOME={home} holds {found}; Elasticsearch {ES_VERSION} needs {wanted}")
    candidates: list[tuple[int, Path]] = []
    for base in search_dirs:
        if base.is_dir():
            for home in sorted(base.iterdir()):
                if home.is_symlink() or not (home / "bin" / "java").exists():
                    continue
                major = java_version(home)
                if major is not None and JAVA_MIN <= major <= JAVA_MAX:
                    candidates.append((major, home))
    if not candidates:
        raise DistributionError(
            f"no {wanted} runtime found (looked at ES_JAVA_HOME, JAVA_HOME, "
            f"{', '.join(map(str, search_dirs))}); install one, e.g. `apt-get install openjdk-17-jre-headless`, "
            "or set ES_JAVA_HOME"
        )
    return max(candidates, key=lambda c: c[0])[1]
