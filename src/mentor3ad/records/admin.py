"""Single, synchronous writes to a record from the command line: create or migrate it, store a model,
record an operator's confirmation of parts (the one way the record learns which parts were good; the
dashboard stays read-only)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

from ..errors import ConfigError, InputError
from .database import Database, RecordError, Session, database_errors, open_database
from .models import ModelRecord
from .reader import result_filters
from .rows import upsert_model
from .schema import migrate

LABELS = ("good", "defective")


def _database(location: Union[str, Path, Database], must_exist: bool = True) -> Database:
    database = location if isinstance(location, Database) else open_database(location)
    if must_exist and not database.exists():
        raise RecordError(f"no inspection record at {database.describe()}")
    return database


@contextlib.contextmanager
def _session(database: Database, up_to_date: bool = True) -> Iterator[Session]:
    """A writable session (the schema migrated first when ``up_to_date``); database errors become one-line
    RecordErrors."""
    session = None
    try:
        session = database.connect()
        if up_to_date:
            migrate(session)
        yield session
    except database_errors() as err:
        text = str(err).strip().splitlines()
        raise RecordError(f"cannot write the record {database.describe()}: {type(err).__name__}: "
                          f"{text[0] if text else ''}") from None
    finally:
        if session is not None:
            session.close()


def prepare(location: Union[str, Path, Database]) -> List[int]:
    """Create the record or bring its schema up to date; returns the migrations applied."""
    with _session(_database(location, must_exist=False), up_to_date=False) as session:
        return migrate(session)


def add_model(location: Union[str, Path, Database], model: ModelRecord) -> None:
    """Insert or update a model's row (threshold, calibration) now."""
    with _session(_database(location, must_exist=False)) as session:
        with session.transaction():
            upsert_model(session, model, time.time_ns())


def confirm(location: Union[str, Path, Database], label: str, operator: str, note: str = "",
            part_ids: Sequence[str] = (), since_ns: Optional[int] = None, until_ns: Optional[int] = None,
            verdicts: Optional[Sequence[str]] = None) -> int:
    """Record that the selected results' parts are ``label`` (good | defective), by ``operator``; returns
    how many results were confirmed. Selection: every result of the given part ids (exact match), or of
    the time window (optionally only these verdicts); InputError when nothing matches."""
    if label not in LABELS:
        raise ConfigError(f"confirmation label must be one of {LABELS}, got {label!r}")
    if not operator.strip():
        raise ConfigError("a confirmation needs the operator's name (--operator)")
    if not part_ids and since_ns is None and until_ns is None:
        raise ConfigError("select the parts to confirm: --part ID (repeatable) or a time window --since/--until")
    with _session(_database(location)) as session:
        if part_ids:
            marks = ", ".join("?" * len(part_ids))
            where, params = result_filters(since_ns=since_ns, until_ns=until_ns, verdicts=verdicts)
            where = f"{where} AND part_id IN ({marks})" if where else f"WHERE part_id IN ({marks})"
            params += [str(p) for p in part_ids]
        else:
            where, params = result_filters(since_ns=since_ns, until_ns=until_ns, verdicts=verdicts)
        now = time.time_ns()
        with session.transaction():
            uids = [row["uid"] for row in session.query(f"SELECT uid FROM results r {where}", params)]
            session.execute_many("INSERT INTO confirmations (result_uid, label, operator, note, confirmed_ns) "
                                 "VALUES (?, ?, ?, ?, ?)", [(uid, label, operator, note, now) for uid in uids])
    if not uids:
        missing = f"part ids {', '.join(part_ids)}" if part_ids else "the time window"
        raise InputError(f"no results in {_database(location).describe()} match {missing}")
    return len(uids)


__all__ = ["prepare", "add_model", "confirm", "LABELS"]
