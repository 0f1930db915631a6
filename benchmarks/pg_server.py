"""A throwaway PostgreSQL server for the tests and benchmarks: initdb + pg_ctl on a free loopback port.

Uses Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``). PostgreSQL refuses to run as
root, so when run as root the cluster belongs to the ``postgres`` system user (``runuser``).
In CI (``CI=true``) a missing server is an error, never a skip: :func:`start` raises.

By default the cluster lives in a temporary folder removed by :meth:`stop`; given ``directory`` it
lives there and is kept, so a benchmark can load its data once and reuse it in later runs.

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

    def __init__(self, user: str = "redline", directory: Path | None = None, settings: dict[str, str] | None = None):
        self.user = user
        self.bindir = find_bindir()
        self.port = None
        self.tmp = None  # holds the unix socket (and the cluster, unless ``directory`` is given)
        self.directory = Path(directory).resolve() if directory is not None else None
        self.settings = dict(settings or {})
        self._run_as = None

    @property
    def data(self) -> str:
        return str(self.directory / "data") if self.directory is not None else os.path.join(self.tmp, "data")

    @property
    def socket_dir(self) -> str:
        """The folder of the server's unix socket: ``psycopg.connect(host=socket_dir, port=port)``."""
        return self.tmp

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
        owner = None
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
        fresh = not os.path.exists(os.path.join(self.data, "PG_VERSION"))
        if fresh:
            if self.directory is not None:
                shutil.rmtree(self.data, ignore_errors=True)  # what an interrupted initdb left
                self.directory.mkdir(parents=True, exist_ok=True)
                if owner is not None:
                    os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._run(
                "initdb",
                "-D",
                self.data,
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
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl",
            "-D",
            self.data,
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
        while fresh:
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
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            # a kept cluster stops cleanly, so that its next start needs no recovery
            mode = "fast" if self.directory is not None else "immediate"
            subprocess.run(
                self._cmd("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"),
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
