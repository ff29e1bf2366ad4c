"""Kill a command in the middle of its work, for the resume tests (batch jobs, tuning)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence


def run_and_kill(cmd: Sequence[str], progress: Callable[[], int], at: int = 2, timeout: float = 120,
                 interval: float = 0.05) -> None:
    """Start ``cmd`` in its own process group, poll ``progress()`` (0 while there is nothing to read) until it
    reaches ``at``, then SIGKILL the whole group. Fails when the command ends first or never gets there."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and progress() < at:
            time.sleep(interval)
        if proc.poll() is not None:  # say why: its exit code and the end of what it printed
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-2000:]
            raise AssertionError(f"{cmd[3] if len(cmd) > 3 else cmd[0]} finished (exit code {proc.returncode}) "
                                 f"before it could be killed; its stderr ended with:\n{tail}")
        assert progress() >= at, f"no progress to {at} within {timeout} s"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        err.close()
