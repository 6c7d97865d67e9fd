"""One virtual environment per peer under ``~/.cache/ralm-es/bench-venvs/<peer>``, built from
``bench/peers/<peer>-requirements.txt``.

torch (with its CUDA wheels, several GB) is not downloaded again: the peer environment sees our torch through a
``.pth`` file naming a folder of links to the installed files of torch and its heavy native dependencies, so pip
counts them as installed while everything else the peer needs is its own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import re
import subprocess
import sys
import time
from pathlib import Path

from ralm_es.config import cache_home

HERE = Path(__file__).resolve().parent
SHARED = ("torch",)
# torch's native dependencies are shared too; the small pure-Python ones are installed in the peer venv.
NATIVE_PREFIXES = ("nvidia", "cuda", "triton")


def requirements_file(peer: str) -> Path:
    return HERE / f"{peer}-requirements.txt"


def venv_dir(peer: str) -> Path:
    return cache_home() / "bench-venvs" / peer


def python_of(peer: str) -> Path:
    return venv_dir(peer) / "bin" / "python"


def shared_distributions() -> list[metadata.Distribution]:
    """torch and every installed native distribution of its family (CUDA wheels pull each other in by extras)."""
    out = [metadata.distribution(name) for name in SHARED]
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name.startswith(NATIVE_PREFIXES):
            out.append(dist)
    return out


def link_shared(folder: Path) -> None:
    """Links in ``folder`` to the top-level files and folders of each shared distribution (and its metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in shared_distributions():
        root = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            link = folder / top
            if not link.exists() and (root / top).exists():
                link.symlink_to(root / top)


def ensure_venv(peer: str) -> dict[str, float | bool | str]:
    """Create (or reuse) the peer's environment; returns how long that took and whether it was built now."""
    requirements = requirements_file(peer)
    folder = venv_dir(peer)
    stamp = folder / ".requirements.sha1"
    digest = hashlib.sha1(requirements.read_bytes() + Path(__file__).read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and python_of(peer).is_file():
        return {"built": False, "seconds": 0.0, "path": str(folder)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    shared = folder / "shared-torch"
    link_shared(shared)
    site = next((folder / "lib").glob("python*/site-packages"))
    (site / "ralm-es-shared-torch.pth").write_text(f"{shared}\n")
    pip = [str(python_of(peer)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(digest)
    return {"built": True, "seconds": round(time.monotonic() - started, 1), "path": str(folder)}
