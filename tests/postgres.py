"""A real PostgreSQL for the tests: Debian's ``postgresql`` package (``.ci/run`` installs it), a cluster made with
``initdb`` in a temporary folder and started with ``pg_ctl`` on a Unix socket only, stopped after; tests that need
it are skipped where PostgreSQL is not installed."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_cluster() -> Iterator[str | None]:
    """A running cluster's server URL (``postgresql://taxonomist@/postgres?host=…``), or ``None`` when PostgreSQL
    is not installed. As root, the cluster runs as the ``postgres`` user (PostgreSQL refuses root)."""
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        yield None
        return
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="taxonomist-pg-"))
    if os.getuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "taxonomist", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start", "-o",
            f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=200")
        yield f"postgresql://taxonomist@/postgres?host={folder}&port={port}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new, empty database on the cluster: its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?", 1)
