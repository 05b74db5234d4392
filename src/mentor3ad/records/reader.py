"""Reading the record: the queries of the dashboard, the CSV export and re-calibration (read-only sessions,
one per thread, reconnected after an error).

Times are integer nanoseconds since the Unix epoch; ``since_ns`` is inclusive, ``until_ns`` exclusive.
Result rows are dicts with the ``results`` columns plus ``id`` (regions as their JSON text).
"""
from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .database import Database, RecordError, Session, database_errors, open_database
from .evidence import default_evidence_dir
from .models import ModelRecord
from .schema import check_version
from .timespec import iso_utc

HOUR_NS = 3_600_000_000_000
EXPORT_COLUMNS = ("id", "uid", "part_id", "part_type", "cell", "stamp_ns", "decided_ns", "written_ns", "verdict",
                  "reason", "score", "threshold", "model_id", "latency_ms", "frame_id", "regions", "thumbnail",
                  "image", "overlay", "raw_map")
# the latest operator confirmation of a result ('good' | 'defective' | NULL)
_CONFIRMED = ("(SELECT c.label FROM confirmations c WHERE c.result_uid = r.uid "
              "ORDER BY c.confirmed_ns DESC, c.id DESC LIMIT 1)")


class RecordReader:
    """Read-only access to a record. evidence_dir: where its evidence files are (default beside a SQLite
    file; None for PostgreSQL unless given)."""

    def __init__(self, location: Union[str, Path, Database], evidence_dir: Optional[Path] = None) -> None:
        self.database = location if isinstance(location, Database) else open_database(location)
        if evidence_dir is None and self.database.path is not None:
            evidence_dir = default_evidence_dir(self.database.path)
        self.evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
        self._local = threading.local()

    def session(self) -> Session:
        """This thread's read-only session (RecordError when the record cannot be reached or read,
        SchemaError when it was written by a newer mentor3ad)."""
        session = getattr(self._local, "session", None)
        if session is None:
            if not self.database.exists():
                raise RecordError(f"no inspection record at {self.database.describe()}")
            try:
                session = self.database.connect(read_only=True)
            except database_errors() as err:
                raise RecordError(f"cannot open the record {self.database.describe()}: {_reason(err)}") from None
            try:
                check_version(session)
            except database_errors() as err:
                session.close()
                raise RecordError(f"cannot read the record {self.database.describe()}: {_reason(err)}") from None
            except BaseException:
                session.close()
                raise
            self._local.session = session
        return session

    def _query(self, sql: str, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        session = self.session()
        try:
            return session.query(sql, params)
        except database_errors() as err:
            self.close()  # reconnect next time (server restarted, file replaced)
            raise RecordError(f"cannot read the record {self.database.describe()}: {_reason(err)}") from None

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    # ------------------------------------------------------------------ counts
    def verdict_counts(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None) -> Dict[str, int]:
        where, params = _window(since_ns, until_ns)
        rows = self._query(f"SELECT verdict, COUNT(*) AS n FROM results r {where} GROUP BY verdict", params)
        return {row["verdict"]: int(row["n"]) for row in rows}

    def hourly_counts(self, since_ns: int, until_ns: Optional[int] = None) -> List[Tuple[int, str, int]]:
        """(hour start ns, verdict, count) per hour and verdict, oldest first."""
        where, params = _window(since_ns, until_ns)
        hour = f"decided_ns / {HOUR_NS}"
        rows = self._query(f"SELECT {hour} AS hour, verdict, COUNT(*) AS n FROM results r {where} "
                           f"GROUP BY {hour}, verdict ORDER BY hour", params)
        return [(int(row["hour"]) * HOUR_NS, row["verdict"], int(row["n"])) for row in rows]

    # ------------------------------------------------------------------ rows
    def recent(self, limit: int = 30, verdicts: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
        """The newest results (optionally only these verdicts), newest first."""
        where, params = result_filters(verdicts=verdicts)
        return self._query(f"SELECT r.* FROM results r {where} ORDER BY decided_ns DESC, id DESC LIMIT ?",
                           params + [int(limit)])

    def search(self, part_id: str = "", since_ns: Optional[int] = None, until_ns: Optional[int] = None,
               verdicts: Optional[Sequence[str]] = None, limit: int = 500) -> List[Dict[str, Any]]:
        """Results whose part_id contains ``part_id`` (ignoring case; empty: any) in the window, newest first."""
        where, params = result_filters(part_id, since_ns, until_ns, verdicts)
        return self._query(f"SELECT r.* FROM results r {where} ORDER BY decided_ns DESC, id DESC LIMIT ?",
                           params + [int(limit)])

    def export(self, part_id: str = "", since_ns: Optional[int] = None, until_ns: Optional[int] = None,
               verdicts: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
        """Every matching result, oldest first, streamed (CSV export), with its latest confirmation."""
        where, params = result_filters(part_id, since_ns, until_ns, verdicts)
        sql = (f"SELECT {', '.join('r.' + c for c in EXPORT_COLUMNS)}, {_CONFIRMED} AS confirmed FROM results r "
               f"{where} ORDER BY decided_ns, id")
        session = self.session()
        try:
            yield from session.stream(sql, params)
        except database_errors() as err:
            self.close()
            raise RecordError(f"cannot read the record {self.database.describe()}: {_reason(err)}") from None

    def scores(self, model_id: Optional[str] = None, part_type: Optional[str] = None,
               limit: int = 500) -> List[Dict[str, Any]]:
        """The newest decided (PASS / FAIL) results' model_id, part_type, verdict, score, threshold."""
        clauses, params = ["verdict IN ('PASS', 'FAIL')", "score IS NOT NULL"], []
        if model_id:
            clauses.append("model_id = ?")
            params.append(model_id)
        if part_type:
            clauses.append("part_type = ?")
            params.append(part_type)
        return self._query(f"SELECT model_id, part_type, verdict, score, threshold FROM results r WHERE "
                           f"{' AND '.join(clauses)} ORDER BY decided_ns DESC, id DESC LIMIT ?", params + [int(limit)])

    def good_scores(self, model_ids: Sequence[str], limit: int = 200, confirmed_only: bool = False,
                    since_ns: Optional[int] = None) -> List[float]:
        """Image scores of recent good parts of these models, newest first: PASS parts not confirmed
        defective plus FAIL parts confirmed good (``confirmed_only``: parts an operator confirmed good)."""
        if not model_ids:
            return []
        marks = ", ".join("?" * len(model_ids))
        good = (f"{_CONFIRMED} = 'good'" if confirmed_only else
                f"((verdict = 'PASS' AND COALESCE({_CONFIRMED}, '') <> 'defective') OR "
                f"(verdict = 'FAIL' AND {_CONFIRMED} = 'good'))")
        params: List[Any] = list(model_ids)
        window = ""
        if since_ns is not None:
            window, params = " AND decided_ns >= ?", params + [int(since_ns)]
        rows = self._query(f"SELECT score FROM results r WHERE model_id IN ({marks}) AND score IS NOT NULL AND "
                           f"verdict IN ('PASS', 'FAIL') AND {good}{window} ORDER BY decided_ns DESC, id DESC LIMIT ?",
                           params + [int(limit)])
        return [float(row["score"]) for row in rows]

    def part_types(self) -> List[str]:
        return [row["part_type"] for row in self._query(
            "SELECT DISTINCT part_type FROM results WHERE part_type IS NOT NULL ORDER BY part_type")]

    # ------------------------------------------------------------------ models
    def models(self) -> List[ModelRecord]:
        """Every model of the record, newest first seen first."""
        return [ModelRecord.from_row(row) for row in self._query("SELECT * FROM models ORDER BY first_seen_ns DESC")]

    def model(self, model_id: str) -> Optional[ModelRecord]:
        rows = self._query("SELECT * FROM models WHERE model_id = ?", (model_id,))
        return ModelRecord.from_row(rows[0]) if rows else None

    def lineage(self, model_id: str) -> List[str]:
        """``model_id`` and the models it was re-calibrated from (same heads, so the same scores)."""
        chain, current = [], model_id
        while current and current not in chain:
            chain.append(current)
            model = self.model(current)
            current = model.parent_model_id if model is not None else ""
        return chain

    def evidence_path(self, relative: Optional[str]) -> Optional[Path]:
        """The file of an evidence path stored in a row (None when there is none or it expired)."""
        if not relative or self.evidence_dir is None:
            return None
        path = (self.evidence_dir / relative).resolve()
        root = self.evidence_dir.resolve()
        return path if path.is_file() and root in path.parents else None


CSV_COLUMNS = ("decided_utc", "part_id", "part_type", "cell", "verdict", "reason", "score", "threshold", "model_id",
               "latency_ms", "regions", "confirmed", "stamp_ns", "decided_ns", "written_ns", "frame_id", "uid", "id",
               "thumbnail", "image", "overlay", "raw_map")


def export_csv(reader: RecordReader, part_id: str = "", since_ns: Optional[int] = None, until_ns: Optional[int] = None,
               verdicts: Optional[Sequence[str]] = None) -> Iterator[str]:
    """The matching results as CSV text, a header line then one line per result (oldest first):
    :data:`CSV_COLUMNS` (decided_utc: ISO 8601 UTC; confirmed: the operator's latest word, if any)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in reader.export(part_id, since_ns, until_ns, verdicts):
        row["decided_utc"] = iso_utc(row["decided_ns"])
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _window(since_ns: Optional[int], until_ns: Optional[int]) -> Tuple[str, List[Any]]:
    return result_filters(since_ns=since_ns, until_ns=until_ns)


def result_filters(part_id: str = "", since_ns: Optional[int] = None, until_ns: Optional[int] = None,
             verdicts: Optional[Sequence[str]] = None) -> Tuple[str, List[Any]]:
    clauses, params = [], []
    if part_id:
        escaped = part_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("LOWER(part_id) LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped.lower()}%")
    if since_ns is not None:
        clauses.append("decided_ns >= ?")
        params.append(int(since_ns))
    if until_ns is not None:
        clauses.append("decided_ns < ?")
        params.append(int(until_ns))
    if verdicts:
        clauses.append(f"verdict IN ({', '.join('?' * len(verdicts))})")
        params.extend(str(v) for v in verdicts)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


__all__ = ["RecordReader", "EXPORT_COLUMNS", "CSV_COLUMNS", "HOUR_NS", "export_csv", "result_filters"]
