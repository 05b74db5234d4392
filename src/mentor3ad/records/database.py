"""Where an inspection record lives and how to talk to it: one SQLite file (default) or a PostgreSQL server.

:func:`open_database` turns ``PATH`` / ``sqlite:///PATH`` / ``postgresql://user@host/db`` into a
:class:`Database`; :meth:`Database.connect` gives a :class:`Session` with one SQL dialect for both (``?``
placeholders, dict rows, explicit transactions):

* SQLite: WAL journal, ``synchronous=FULL`` (a commit is on disk), a short busy timeout (a locked file is a
  transient error for the writer's retry loop, never a stall); read-only sessions open the file with
  ``mode=ro`` (the dashboard can never write);
* PostgreSQL: psycopg 3, autocommit outside explicit transactions, ``connect_timeout`` bounded; read-only
  sessions set ``default_transaction_read_only``.

:func:`is_transient` says whether an error is worth a retry (server down, file locked) or belongs to the
data (a refused row).
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ConfigError, Mentor3ADError

SQLITE_BUSY_TIMEOUT_S = 1.0
PG_CONNECT_TIMEOUT_S = 3


class RecordError(Mentor3ADError):
    """The record cannot be reached or read (the message names it and the database's reason)."""


@dataclass(frozen=True)
class Database:
    """A record's location. dialect: "sqlite" or "postgresql"; target: the file path or the URL."""

    dialect: str
    target: str

    @property
    def path(self) -> Optional[Path]:
        """The SQLite file (None for PostgreSQL)."""
        return Path(self.target) if self.dialect == "sqlite" else None

    def describe(self) -> str:
        """The location for logs and pages: a file path, or the URL without its password."""
        if self.dialect == "sqlite":
            return str(self.target)
        parts = urlsplit(self.target)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.target

    def exists(self) -> bool:
        """False only for a SQLite file that is not there (a server is assumed to exist)."""
        return self.dialect != "sqlite" or Path(self.target).is_file()

    def connect(self, read_only: bool = False) -> "Session":
        """A new session; raises the driver's error when the database cannot be reached."""
        if self.dialect == "sqlite":
            return Session(self, _connect_sqlite(Path(self.target), read_only))
        return Session(self, _connect_postgresql(self.target, read_only))


def open_database(location: Union[str, Path]) -> Database:
    """``PATH``, ``sqlite:///PATH`` or ``postgresql://...`` (also ``postgres://``) -> :class:`Database`
    (ConfigError for other schemes or an empty location)."""
    text = str(location).strip()
    if not text:
        raise ConfigError("the record location is empty: give a SQLite file path or a postgresql:// URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        return Database("postgresql", "postgresql://" + text.split("://", 1)[1])
    if scheme == "sqlite":  # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        if not text.lower().startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise ConfigError(f"record location {text!r}: write sqlite:///relative/path or sqlite:////absolute/path")
        return Database("sqlite", str(Path(text[len("sqlite:///"):]).expanduser()))
    if scheme:
        raise ConfigError(f"record location {text!r}: unknown scheme {scheme!r} (use a file path, sqlite:///PATH or "
                          "postgresql://USER@HOST/DB)")
    return Database("sqlite", str(Path(text).expanduser()))


def _connect_sqlite(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:
        if not path.is_file():
            raise sqlite3.OperationalError(f"no inspection record at {path}")
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                                     timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(path), timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
    connection.row_factory = sqlite3.Row
    return connection


def _connect_postgresql(url: str, read_only: bool):
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError as err:  # pragma: no cover - psycopg is a pinned runtime requirement
        raise ConfigError(f"PostgreSQL records need psycopg 3 (pip install 'psycopg[binary]'): {err}") from None
    options = "-c statement_timeout=30000" + (" -c default_transaction_read_only=on" if read_only else "")
    # a server that vanishes without closing the connection (cable, power) is noticed within ~10 s
    return psycopg.connect(url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S, row_factory=dict_row,
                           options=options, application_name="mentor3ad", keepalives=1, keepalives_idle=5,
                           keepalives_interval=2, keepalives_count=3, tcp_user_timeout=10000)


_PLACEHOLDER = re.compile(r"\?")


class Session:
    """One connection with the dialect hidden: ``?`` placeholders everywhere, rows as dicts."""

    def __init__(self, database: Database, connection) -> None:
        self.database = database
        self.connection = connection
        self.dialect = database.dialect
        self._in_transaction = False

    def _sql(self, sql: str) -> str:
        return _PLACEHOLDER.sub("%s", sql) if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count (-1 when unknown)."""
        cursor = self.connection.execute(self._sql(sql), tuple(params))
        return cursor.rowcount

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many parameter rows (a batch of results)."""
        if self.dialect == "postgresql":
            with self.connection.cursor() as cursor:
                cursor.executemany(self._sql(sql), [tuple(r) for r in rows])
        else:
            self.connection.executemany(sql, [tuple(r) for r in rows])

    def query(self, sql: str, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        cursor = self.connection.execute(self._sql(sql), tuple(params))
        return [dict(row) for row in cursor.fetchall()]

    def stream(self, sql: str, params: Sequence[Any] = (), batch: int = 500) -> Iterator[Dict[str, Any]]:
        """Rows one by one, fetched ``batch`` at a time (CSV export of a large range)."""
        cursor = self.connection.execute(self._sql(sql), tuple(params))
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield from (dict(row) for row in rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Session"]:
        """All or nothing: commits on success, rolls back on any error (SQLite: ``BEGIN IMMEDIATE``, the
        write lock taken up front)."""
        if self.dialect == "postgresql":
            with self.connection.transaction():
                yield self
            return
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def lock_for_migration(self) -> None:
        """Inside a transaction: one migrating process at a time (PostgreSQL advisory lock; SQLite's
        ``BEGIN IMMEDIATE`` already holds the write lock)."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(?)", (0x6D336164,))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def is_transient(error: BaseException) -> bool:
    """True for errors of reaching the database (server down, connection lost, file locked or unwritable),
    False for errors of the data or the SQL (retrying those would never succeed)."""
    if isinstance(error, sqlite3.OperationalError):
        return True
    if isinstance(error, (OSError, TimeoutError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


def database_errors() -> tuple:
    """The exception classes a database call may raise (sqlite3's and, when installed, psycopg's)."""
    classes = [sqlite3.Error, OSError]
    try:
        import psycopg

        classes.append(psycopg.Error)
    except ImportError:  # pragma: no cover
        pass
    return tuple(classes)


__all__ = ["Database", "Session", "RecordError", "open_database", "is_transient", "database_errors"]
