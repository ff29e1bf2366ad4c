"""Kill a command in the middle of its work, for the resume tests (batch jobs, tuning)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def run_and_kill(cmd: Sequence[str], progress: Callable[[], int], at: int = 2, timeout: float = 120,
                 interval: float = 0.05) -> None:
    """Start ``cmd`` in its own process group, poll ``progress()`` (0 while there is nothing to read) until it
    reaches ``at``, then SIGKILL the whole group. Fails when the command ends first or never gets there."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and progress() < at:
            time.sleep(interval)
        assert proc.poll() is None, f"{cmd[3] if len(cmd) > 3 else cmd[0]} finished before it could be killed"
        assert progress() >= at, f"no progress to {at} within {timeout} s"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
