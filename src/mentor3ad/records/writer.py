"""The record writer: inspection results appended to the record off the caller's thread.

:meth:`RecordWriter.submit` takes an :class:`~mentor3ad.types.InspectionResult` (and optionally its
:class:`~mentor3ad.records.evidence.Evidence`) and returns at once: it never blocks on the database or the
disk and never raises. A background thread writes the evidence files, then the rows in transactions of up
to ``batch_size``; while the database is unreachable (server down, file locked) the rows stay buffered and
the write is retried with back-off (0.2 s doubling to ``retry_max_s``). Every result gets a unique id at
submission (a random prefix per writer and a counter), so a batch retried after a lost acknowledgement is
recorded exactly once.

Bounds: at most ``max_buffered`` unwritten results (then a new result is dropped) and at most
``max_pending_evidence`` results whose pictures are not yet on disk (then a new result's pictures are
dropped, its row kept). Each loss is counted and logged as an error (at most every 10 s), never silent.
:meth:`counters` gives the numbers for /diagnostics:

``submitted``, ``written``, ``buffered`` (unwritten now), ``retried`` (written after a failed attempt),
``dropped`` (results lost: buffer full, refused by the database, unwritten at close), ``failed_attempts``
(batch writes that failed), ``evidence_files``, ``evidence_dropped``, ``evidence_errors``,
``models_registered``, ``database_up``, ``last_error``, ``oldest_buffered_s``.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .database import Database, Session, database_errors, is_transient, open_database
from .evidence import Evidence, EvidenceStore, RetentionPolicy, default_evidence_dir
from .models import ModelRecord
from .rows import insert_results, note_models, result_row, upsert_model
from .schema import SchemaError, migrate

LOG = logging.getLogger("mentor3ad.records")
LOSS_LOG_INTERVAL_S = 10.0


@dataclass
class _Pending:
    """One unwritten result: its row (built at submission, small) and, until its files are written, the
    result and pictures the evidence is drawn from."""

    uid: str
    decided_ns: int
    row: Dict[str, Any]
    result: Any = None
    evidence: Optional[Evidence] = None
    attempts: int = 0


class RecordWriter:
    """Appends results to a record (SQLite file or PostgreSQL URL) from a background thread.

    location: record path or URL; cell: this node's / cell's name, stored with every row; evidence_dir:
    folder of the evidence files (default beside a SQLite file; none for PostgreSQL unless given);
    retention: the evidence budget.
    """

    def __init__(self, location: Union[str, Path, Database], cell: str = "", evidence_dir: Optional[Path] = None,
                 retention: Optional[RetentionPolicy] = None, max_buffered: int = 10000, max_pending_evidence: int = 64,
                 batch_size: int = 200, retry_max_s: float = 5.0) -> None:
        self.database = location if isinstance(location, Database) else open_database(location)
        self.cell = cell
        if evidence_dir is None and self.database.path is not None:
            evidence_dir = default_evidence_dir(self.database.path)
        self.evidence = EvidenceStore(Path(evidence_dir), retention) if evidence_dir is not None else None
        self.max_buffered, self.max_pending_evidence = int(max_buffered), int(max_pending_evidence)
        self.batch_size, self.retry_max_s = int(batch_size), float(retry_max_s)
        # result ids: a random prefix per writer + a counter (uuid4 per result would read os.urandom, a
        # system call that releases the GIL: the caller could then wait a whole switch interval for it)
        self._uid_prefix, self._serial = uuid.uuid4().hex[:20], itertools.count()
        self._queue: "collections.deque[_Pending]" = collections.deque()
        self._evidence_queue: "collections.deque[_Pending]" = collections.deque()
        self._models: Dict[str, ModelRecord] = {}
        self._known_models: set = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._session: Optional[Session] = None
        self._count = collections.Counter()
        self._last_error = ""
        self._last_loss_log = -LOSS_LOG_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="mentor3ad-record-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side (never blocks, never raises)
    def submit(self, result: Any, evidence: Optional[Evidence] = None, part_id: Optional[str] = None,
               part_type: Optional[str] = None) -> bool:
        """Queue one result for the record; False when it was dropped (buffer full, writer closed)."""
        try:
            uid, decided_ns = f"{self._uid_prefix}{next(self._serial):012x}", time.time_ns()
            item = _Pending(uid, decided_ns, result_row(result, uid, decided_ns, self.cell, part_id, part_type))
            wants_files = self.evidence is not None and (evidence is not None or self.evidence.policy.keep_raw_maps)
            if wants_files:
                item.result, item.evidence = result, evidence or Evidence()
            with self._lock:
                self._count["submitted"] += 1
                if self._stop or len(self._queue) >= self.max_buffered:
                    self._lose(1, "the writer is closed" if self._stop else
                               f"{len(self._queue)} results are unwritten (max_buffered)")
                    return False
                if wants_files and len(self._evidence_queue) >= self.max_pending_evidence:
                    item.result, item.evidence, wants_files = None, None, False
                    self._count["evidence_dropped"] += 1
                    self._log_loss(f"the pictures of a result were not kept: {len(self._evidence_queue)} results' "
                                   "pictures are waiting for the disk (max_pending_evidence)", level=logging.WARNING)
                self._queue.append(item)
                if wants_files:
                    self._evidence_queue.append(item)
            self._wake.set()
            return True
        except Exception as err:  # noqa: BLE001 - the caller's thread must never see an error from the record
            with self._lock:
                self._lose(1, f"submit failed: {err!r}")
            return False

    def register_model(self, model: ModelRecord) -> None:
        """Store (insert or update) a model's threshold and calibration with the next write."""
        with self._lock:
            self._models[model.model_id] = model
        self._wake.set()

    def counters(self) -> Dict[str, Any]:
        with self._lock:
            out = {key: int(self._count[key]) for key in ("submitted", "written", "retried", "dropped",
                                                         "failed_attempts", "evidence_files", "evidence_dropped",
                                                         "evidence_errors", "models_registered")}
            out["buffered"] = len(self._queue)
            out["oldest_buffered_s"] = (time.time_ns() - self._queue[0].decided_ns) / 1e9 if self._queue else 0.0
            out["database_up"] = self._session is not None
            out["last_error"] = self._last_error
        return out

    def status(self) -> Tuple[str, str]:
        """(level, message) for a /diagnostics entry: ERROR once results were lost, WARN while the database
        cannot be written (results buffered), else OK."""
        c = self.counters()
        where = self.database.describe()
        if c["dropped"]:
            return "ERROR", (f"{c['dropped']} results lost (not recorded in {where}); {c['buffered']} buffered"
                             + (f"; last error: {c['last_error']}" if c["last_error"] else ""))
        if c["last_error"] and c["buffered"]:
            return "WARN", (f"{where} cannot be written: {c['last_error']}; {c['buffered']} results buffered for "
                            f"{c['oldest_buffered_s']:.0f} s, retrying")
        return "OK", f"{c['written']} results recorded in {where}"

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._models:
                    return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is buffered (up to ``timeout_s``), stop the thread; what is still unwritten then is
        counted as dropped (logged). True when nothing was lost at close."""
        written = self.flush(timeout_s)
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join(max(1.0, timeout_s))
        with self._lock:
            left = len(self._queue)
            if left:
                self._lose(left, "the writer closed while the database was unreachable", force_log=True)
                self._queue.clear()
        if self._session is not None:
            self._session.close()
            self._session = None
        return written and not left

    # ------------------------------------------------------------------ accounting (lock held)
    def _lose(self, count: int, why: str, force_log: bool = False) -> None:
        self._count["dropped"] += count
        self._log_loss(f"{count} result(s) not recorded: {why}; {self._count['dropped']} lost so far"
                       + (f" (last database error: {self._last_error})" if self._last_error else ""), force_log)

    def _log_loss(self, message: str, force: bool = False, level: int = logging.ERROR) -> None:
        now = time.monotonic()
        if force or now - self._last_loss_log >= LOSS_LOG_INTERVAL_S:
            self._last_loss_log = now
            LOG.log(level, "inspection record %s: %s", self.database.describe(), message)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        delay, retry_at = 0.0, 0.0
        while True:
            with self._lock:
                if self._stop:
                    return
                rows_due = bool(self._queue or self._models) and time.monotonic() >= retry_at
                busy = rows_due or bool(self._evidence_queue)
            if not busy:  # sleep until a submission, the next retry or a second passed
                pending = retry_at - time.monotonic()
                self._wake.wait(timeout=pending if 0 < pending < 1.0 else 1.0)
            self._wake.clear()
            try:
                self._write_evidence()
                if time.monotonic() >= retry_at:
                    if self._write_rows():
                        delay, retry_at = 0.0, 0.0
                    else:
                        delay = min(self.retry_max_s, max(0.2, 2 * delay))
                        retry_at = time.monotonic() + delay
                if self.evidence is not None:
                    self.evidence.maybe_enforce()
            except Exception as err:  # noqa: BLE001 - a bug must not end the thread: logged, retried
                LOG.exception("inspection record writer: unexpected error")
                with self._lock:
                    self._last_error = repr(err)
                delay = self.retry_max_s
                retry_at = time.monotonic() + delay

    def _write_evidence(self) -> None:
        """The pictures of the results queued so far (at most for 0.5 s: rows wait for their pictures, so a
        steady stream of pictures must not hold the rows back)."""
        with self._lock:
            count = len(self._evidence_queue)
        deadline = time.monotonic() + 0.5
        for _ in range(count):
            if time.monotonic() > deadline:
                return
            with self._lock:
                item = self._evidence_queue[0]
            try:
                files = self.evidence.write(item.uid, item.row["verdict"], item.decided_ns, item.result, item.evidence)
                count = ("evidence_files", len(files))
            except (OSError, ValueError) as err:
                LOG.error("inspection record: evidence of %s not written to %s: %s", item.uid, self.evidence.root, err)
                files, count = {}, ("evidence_errors", 1)
            with self._lock:
                item.row.update(files)
                self._count[count[0]] += count[1]
                item.result = item.evidence = None  # the map and pictures are no longer needed
                self._evidence_queue.popleft()

    def _connect(self) -> Session:
        if self._session is None:
            session = self.database.connect()
            try:
                migrate(session)
            except BaseException:
                session.close()
                raise
            self._session = session
            LOG.info("inspection record %s: connected", self.database.describe())
        return self._session

    def _write_rows(self) -> bool:
        """One batch (and pending model registrations); False when the database could not be reached."""
        with self._lock:
            batch: List[_Pending] = []
            for item in self._queue:
                if item.evidence is not None or len(batch) >= self.batch_size:
                    break  # rows follow their pictures
                batch.append(item)
            models = dict(self._models)
        if not batch and not models:
            return True
        now = time.time_ns()
        for item in batch:
            item.row["written_ns"] = now
        try:
            session = self._connect()
            with session.transaction():
                new_models = {i.row["model_id"] for i in batch if i.row["model_id"]} - self._known_models
                note_models(session, sorted(new_models), now)
                for model in models.values():
                    upsert_model(session, model, now)
                insert_results(session, [i.row for i in batch])
        except database_errors() as err:
            return self._failed(batch, err)
        except SchemaError as err:  # a newer mentor3ad's record: nothing is written, the results stay buffered
            with self._lock:
                self._last_error = str(err)
                self._count["failed_attempts"] += 1
                self._log_loss(f"{err}; {len(self._queue)} results buffered")
            return False
        self._known_models |= {i.row["model_id"] for i in batch if i.row["model_id"]} | set(models)
        with self._lock:
            for item in batch:
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
            for model_id, model in models.items():
                if self._models.get(model_id) is model:
                    del self._models[model_id]
            self._count["written"] += len(batch)
            self._count["retried"] += sum(1 for i in batch if i.attempts)
            self._count["models_registered"] += len(models)
            self._last_error = ""
        return True

    def _failed(self, batch: List[_Pending], err: BaseException) -> bool:
        with self._lock:
            self._count["failed_attempts"] += 1
            self._last_error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            for item in batch:
                item.attempts += 1
        if self._session is not None:
            self._session.close()
            self._session = None
        if is_transient(err):
            LOG.warning("inspection record %s unreachable (%s); %d results buffered, retrying",
                        self.database.describe(), self._last_error, len(self._queue))
            return False
        # the data was refused: write the batch row by row, drop (count, log) the rows refused
        for item in batch:
            try:
                session = self._connect()
                with session.transaction():
                    insert_results(session, [item.row])
            except database_errors() as row_err:
                if is_transient(row_err):
                    return False
                with self._lock:
                    self._queue.remove(item)
                    self._lose(1, f"the database refused result {item.uid} ({type(row_err).__name__}: {row_err})",
                               force_log=True)
                continue
            with self._lock:
                self._queue.remove(item)
                self._count["written"] += 1
        return True


__all__ = ["RecordWriter"]
