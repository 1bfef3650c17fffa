"""A real PostgreSQL server for the tests, started by pytest-postgresql from Debian's package.

initdb and postgres refuse to run as root (as CI does), so there pg_ctl runs as the
unprivileged `postgres` user that Debian's package creates, through `runuser`, in a folder
that user owns. Each test gets an empty database of its own (pytest-postgresql's janitor).
The tests skip, saying why, only where no server can start (the binaries are missing, or no
unprivileged user exists); under CI=true they fail instead, so CI never skips them quietly.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

SERVER_USER = "postgres"


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}")
    pytest.skip(f"no PostgreSQL server for the tests: {reason}")


def _pg_ctl() -> str | None:
    """pg_ctl on PATH, else the newest Debian cluster's (/usr/lib/postgresql/N/bin is not on PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL server (pytest-postgresql's PostgreSQLExecutor) on a free local port."""
    try:
        import port_for
        from pytest_postgresql.executors import PostgreSQLExecutor
    except ImportError as exc:
        _unavailable(f"pytest-postgresql is not installed ({exc}); pip install -e '.[test,postgres]'")
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        _unavailable("pg_ctl not found; apt-get install postgresql (listed in scripts/apt-packages.txt)")
    workdir = Path(tempfile.mkdtemp(prefix="archive-search-pg-"))
    executable = pg_ctl
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(workdir)
            _unavailable(f"running as root, and there is no unprivileged {SERVER_USER!r} user to run the server")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        executable = str(workdir / "pg_ctl-as-postgres")
        Path(executable).write_text(f'#!/bin/sh\nexec runuser -u {SERVER_USER} -- "{pg_ctl}" "$@"\n')
        os.chmod(executable, stat.S_IRWXU)
    executor = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port_for.select_random(),
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "server.log"),
        startparams="-w",
        dbname="archive",
        user=SERVER_USER,
    )
    try:
        executor.start()
    except Exception as exc:  # the server's own log says why
        log = (workdir / "server.log").read_text(errors="replace")[-2000:] if (workdir / "server.log").exists() else ""
        executor.clean_directory()
        shutil.rmtree(workdir, ignore_errors=True)
        _unavailable(f"the server did not start ({exc}) {log}")
    try:
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A SQLAlchemy URL of an empty database of its own, dropped after the test."""
    from pytest_postgresql.janitor import DatabaseJanitor

    name = f"test_{uuid.uuid4().hex[:12]}"
    server = postgres_server
    with DatabaseJanitor(user=server.user, host=server.host, port=server.port, dbname=name):
        yield f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
