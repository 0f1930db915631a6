"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder on a free loopback port.

Uses Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``). PostgreSQL refuses to run as
root, so when the tests run as root the cluster belongs to the ``postgres`` system user (``runuser``).
In CI (``CI=true``) a missing server is an error, never a skip: :func:`start` raises.

Usage::

    with PostgresServer() as pg:
        url = pg.url            # postgresql://redline@127.0.0.1:PORT/redline
        pg.new_database("t1")   # a fresh database per test
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; everything lives in a temp dir."""

    def __init__(self, user: str = "redline"):
        self.user = user
        self.bindir = find_bindir()
        self.port = None
        self.tmp = None
        self._run_as = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/redline"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._run_as:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        return cmd

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )

    def start(self) -> PostgresServer:
        if self.bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                "install them with: apt-get install -y postgresql"
            )
        self.tmp = tempfile.mkdtemp(prefix="redline-pg-")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user to own the cluster"
                ) from exc
            self._run_as = "postgres"
            os.chmod(self.tmp, 0o755)
            os.chown(self.tmp, owner.pw_uid, owner.pw_gid)
        data = os.path.join(self.tmp, "data")
        self._run(
            "initdb",
            "-D",
            data,
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.port = _free_port()
        # Small and fast: no fsync (throwaway data), unix socket in the temp dir, loopback TCP only.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.tmp} -c fsync=off -c full_page_writes=off -c max_connections=50"
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(self.tmp, "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._psql("postgres", "CREATE DATABASE redline")
                break
            except PostgresUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def _psql(self, database: str, sql: str) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url_for(database), autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql)
        except psycopg.OperationalError as exc:
            raise PostgresUnavailable(str(exc)) from exc

    def new_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self._psql("postgres", f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        if self.tmp is None:
            return
        data = os.path.join(self.tmp, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                self._cmd("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
