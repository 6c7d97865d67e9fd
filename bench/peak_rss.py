"""``python bench/peak_rss.py OUT COMMAND...``: run COMMAND and write its own peak RSS (KiB) to OUT; exits with
COMMAND's status.

Linux carries a process's high-water RSS across fork and exec, so a command started straight from a benchmark
process that holds models reports that process's RSS as its own peak. Started from this small process instead, the
command's peak is its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    out, *command = sys.argv[1:]
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    Path(out).write_text(str(usage.ru_maxrss), encoding="utf-8")
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
