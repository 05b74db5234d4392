"""The record's schema, versioned: migrations as code, applied in order, each in one transaction.

Table ``schema_version`` (version, applied_at, description) lists the applied migrations. :func:`migrate`
brings a database to :data:`SCHEMA_VERSION` (one process at a time: an advisory lock on PostgreSQL, the
write lock on SQLite), :func:`check_version` refuses a record written by a newer mentor3ad.

Tables (version 1):

``results``        one row per inspection result: ``uid`` (unique: a retried write is recorded once),
                   part_id, part_type, cell, stamp_ns (the image's stamp), decided_ns (when the result was
                   submitted), written_ns (when the row was written), verdict, reason, score, threshold
                   (NULL when not computed), model_id, latency_ms, frame_id, regions (JSON list), and the
                   evidence files relative to the evidence folder: thumbnail, image, overlay, raw_map.
``models``         one row per model: first_seen_ns, threshold, target_false_reject_rate, rule,
                   calibration_scores (JSON list), expected_false_reject_rate (at calibration),
                   parent_model_id (the model it was re-calibrated from), path, info (JSON).
``confirmations``  an operator's word on a result: result_uid, label (good | defective), operator, note,
                   confirmed_ns; the latest confirmation of a result counts.

Times are integer nanoseconds since the Unix epoch (UTC).
"""
from __future__ import annotations

import time
from typing import Callable, List, Sequence, Tuple, Union

from ..errors import ConfigError
from .database import Session

Statement = Union[str, Callable[[Session], None]]


def _serial(session: Session) -> str:
    return "BIGSERIAL PRIMARY KEY" if session.dialect == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"


def _version_1(session: Session) -> None:
    session.execute(f"""CREATE TABLE results (
        id {_serial(session)},
        uid TEXT NOT NULL UNIQUE,
        part_id TEXT,
        part_type TEXT,
        cell TEXT NOT NULL,
        stamp_ns BIGINT,
        decided_ns BIGINT NOT NULL,
        written_ns BIGINT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        score DOUBLE PRECISION,
        threshold DOUBLE PRECISION,
        model_id TEXT NOT NULL,
        latency_ms DOUBLE PRECISION,
        frame_id TEXT NOT NULL,
        regions TEXT NOT NULL,
        thumbnail TEXT,
        image TEXT,
        overlay TEXT,
        raw_map TEXT)""")
    for name, columns in (("results_decided", "decided_ns"), ("results_part", "part_id"),
                          ("results_model", "model_id, decided_ns"), ("results_verdict", "verdict, decided_ns")):
        session.execute(f"CREATE INDEX {name} ON results ({columns})")
    session.execute("""CREATE TABLE models (
        model_id TEXT PRIMARY KEY,
        first_seen_ns BIGINT NOT NULL,
        threshold DOUBLE PRECISION,
        target_false_reject_rate DOUBLE PRECISION,
        rule TEXT,
        calibration_scores TEXT,
        expected_false_reject_rate DOUBLE PRECISION,
        parent_model_id TEXT,
        path TEXT,
        info TEXT)""")
    session.execute(f"""CREATE TABLE confirmations (
        id {_serial(session)},
        result_uid TEXT NOT NULL,
        label TEXT NOT NULL CHECK (label IN ('good', 'defective')),
        operator TEXT NOT NULL,
        note TEXT NOT NULL,
        confirmed_ns BIGINT NOT NULL)""")
    session.execute("CREATE INDEX confirmations_result ON confirmations (result_uid, confirmed_ns)")


# (version, description, statements): append new migrations here, never edit an applied one
MIGRATIONS: List[Tuple[int, str, Sequence[Statement]]] = [
    (1, "results, models, confirmations", [_version_1]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(ConfigError):
    """The record's schema cannot be used by this mentor3ad (written by a newer version)."""


def current_version(session: Session) -> int:
    """The highest applied migration (0 for an empty database)."""
    if session.dialect == "postgresql":
        exists = session.query("SELECT to_regclass('schema_version') IS NOT NULL AS present")[0]["present"]
    else:
        exists = bool(session.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"))
    if not exists:
        return 0
    row = session.query("SELECT MAX(version) AS version FROM schema_version")[0]
    return int(row["version"] or 0)


def check_version(session: Session, migrations=MIGRATIONS) -> int:
    """The record's version; SchemaError when it is newer than this code knows."""
    version = current_version(session)
    known = migrations[-1][0]
    if version > known:
        raise SchemaError(f"the inspection record {session.database.describe()} has schema version {version}, "
                          f"newer than this mentor3ad knows ({known}): update mentor3ad to read or write it")
    return version


def migrate(session: Session, migrations=MIGRATIONS) -> List[int]:
    """Apply the missing migrations, each in its own transaction; returns the versions applied."""
    applied: List[int] = []
    with session.transaction():
        session.lock_for_migration()
        session.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                        "applied_at BIGINT NOT NULL, description TEXT NOT NULL)")
    for version, description, statements in migrations:
        with session.transaction():
            session.lock_for_migration()
            if version <= check_version(session, migrations):
                continue
            for statement in statements:
                statement(session) if callable(statement) else session.execute(statement)
            session.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                            (version, time.time_ns(), description))
            applied.append(version)
    return applied


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaError", "current_version", "check_version", "migrate"]
