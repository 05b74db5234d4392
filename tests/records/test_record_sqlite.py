"""The inspection record on a real SQLite file: rows, evidence, models, schema versions, a locked database,
the buffer bound, and a writer killed with SIGKILL."""
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO_ROOT
from record_helpers import MODEL_ID, THRESHOLD, calibration_scores, fill_record, part_result
from mentor3ad.records import Evidence, ModelRecord, RecordReader, RecordWriter
from mentor3ad.records.admin import confirm
from mentor3ad.records.schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, migrate
from mentor3ad.types import InspectionResult


def test_results_rows_evidence_and_models_are_recorded(tmp_path):
    record = tmp_path / "line.sqlite"
    writer = RecordWriter(record, cell="cell-1")
    writer.register_model(ModelRecord(MODEL_ID, THRESHOLD, 0.01, "tail", calibration_scores(), 0.004))
    fill_record(writer, 10)
    writer.submit(InspectionResult.error("no 3D data within 2.0 s", model_id=MODEL_ID, stamp_ns=7),
                  Evidence(rgb=part_result(0)[0]), part_id="P-ERR")
    assert writer.close() and writer.counters()["dropped"] == 0
    counters = writer.counters()
    assert (counters["submitted"], counters["written"], counters["buffered"]) == (11, 11, 0)
    assert counters["models_registered"] == 1 and counters["evidence_dropped"] == 0

    reader = RecordReader(record)
    assert reader.verdict_counts() == {"PASS": 8, "FAIL": 2, "ERROR": 1}
    failed = reader.recent(5, verdicts=["FAIL"])[0]
    rgb, expected = part_result(9)
    assert failed["part_id"] == "P-00009" and failed["part_type"] == "flange" and failed["cell"] == "cell-1"
    assert failed["score"] == pytest.approx(expected.score) and failed["threshold"] == THRESHOLD
    assert failed["model_id"] == MODEL_ID and failed["latency_ms"] == pytest.approx(expected.latency_ms)
    assert failed["stamp_ns"] == expected.stamp_ns and failed["written_ns"] >= failed["decided_ns"]
    regions = json.loads(failed["regions"])
    assert [r["bbox"] for r in regions] == [list(r.bbox) for r in expected.regions] and regions[0]["area_mm2"] > 0
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(reader.evidence_path(failed["image"]))), rgb)
    overlay = np.asarray(Image.open(reader.evidence_path(failed["overlay"])))
    assert overlay.shape == rgb.shape and not np.array_equal(overlay, rgb)
    assert reader.evidence_path(failed["thumbnail"]).suffix == ".jpg"
    passed = reader.recent(1, verdicts=["PASS"])[0]
    assert passed["thumbnail"] and passed["image"] is None and passed["overlay"] is None  # PASS: thumbnail only
    error = reader.search("p-err")[0]  # part id search ignores case
    assert error["verdict"] == "ERROR" and error["reason"] == "no 3D data within 2.0 s" and error["score"] is None
    assert error["image"] and error["overlay"] is None  # an ERROR keeps its image; no map, no overlay
    model = reader.model(MODEL_ID)
    assert model.target_false_reject_rate == 0.01 and model.calibration_scores == pytest.approx(calibration_scores())
    assert reader.part_types() == ["flange", "gland"] and len(reader.good_scores([MODEL_ID])) == 8
    with sqlite3.connect(record) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_model_first_seen_gets_a_row_and_confirmations_change_the_good_parts(tmp_path):
    record = tmp_path / "r.sqlite"
    writer = RecordWriter(record)
    fill_record(writer, 10)
    assert writer.close()
    reader = RecordReader(record)
    assert [m.model_id for m in reader.models()] == [MODEL_ID] and reader.model(MODEL_ID).calibration_scores == []
    assert reader.good_scores([MODEL_ID], confirmed_only=True) == []
    assert confirm(record, "good", "alice", part_ids=["P-00004", "P-00001"]) == 2  # a FAIL (false reject), a PASS
    assert confirm(record, "defective", "bob", part_ids=["P-00002"]) == 1
    assert len(reader.good_scores([MODEL_ID], confirmed_only=True)) == 2
    assert len(reader.good_scores([MODEL_ID])) == 8 - 1 + 1  # P-00002 no longer good, P-00004 counted
    assert confirm(record, "good", "carol", since_ns=0, verdicts=["PASS"]) == 8
    with pytest.raises(Exception, match="match"):
        confirm(record, "good", "alice", part_ids=["nope"])


def test_schema_is_versioned_and_migrated_in_order(tmp_path):
    record = tmp_path / "r.sqlite"
    writer = RecordWriter(record)
    fill_record(writer, 3)
    assert writer.close()
    reader = RecordReader(record)
    versions = reader.session().query("SELECT version FROM schema_version")
    assert [v["version"] for v in versions] == list(range(1, SCHEMA_VERSION + 1))

    def add_column(session):
        session.execute("ALTER TABLE results ADD COLUMN operator_note TEXT")

    upgraded = MIGRATIONS + [(SCHEMA_VERSION + 1, "a later release's column", [add_column])]
    from mentor3ad.records.database import open_database
    session = open_database(record).connect()
    assert migrate(session, upgraded) == [SCHEMA_VERSION + 1] and migrate(session, upgraded) == []
    assert session.query("SELECT COUNT(*) AS n FROM results")[0]["n"] == 3  # the data survives the migration
    session.close()
    # this release does not know version SCHEMA_VERSION + 1: it refuses the record instead of guessing
    with pytest.raises(SchemaError, match="newer than this mentor3ad"):
        RecordReader(record).recent()
    refused = RecordWriter(record)
    refused.submit(part_result(0)[1])
    time.sleep(0.5)
    assert refused.counters()["written"] == 0 and "newer than this mentor3ad" in refused.counters()["last_error"]
    refused.close(timeout_s=0.5)
    assert refused.counters()["dropped"] == 1


def test_locked_database_is_retried_and_every_result_written_once(tmp_path):
    record = tmp_path / "r.sqlite"
    writer = RecordWriter(record, retry_max_s=0.3)
    fill_record(writer, 5)
    assert writer.flush(30)
    blocker = sqlite3.connect(record, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: every write fails for now
    fill_record(writer, 20, start=5)
    deadline = time.monotonic() + 20
    while writer.counters()["failed_attempts"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.counters()["buffered"] == 20 and writer.counters()["database_up"] is False
    level, message = writer.status()
    assert level == "WARN" and "database is locked" in message and "20 results buffered" in message
    blocker.execute("ROLLBACK")
    blocker.close()
    assert writer.close(30)
    counters = writer.counters()
    assert (counters["written"], counters["retried"], counters["dropped"]) == (25, 20, 0)
    assert writer.status() == ("OK", f"25 results recorded in {record}")
    rows = RecordReader(record).search(limit=100)
    assert sorted(r["part_id"] for r in rows) == [f"P-{i:05d}" for i in range(25)]


def test_a_full_buffer_is_a_counted_and_logged_loss(tmp_path, caplog):
    record = tmp_path / "r.sqlite"
    blocker = sqlite3.connect(record, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    blocker.execute("BEGIN EXCLUSIVE")
    writer = RecordWriter(record, max_buffered=5)
    with caplog.at_level(logging.ERROR, logger="mentor3ad.records"):
        accepted = [writer.submit(part_result(i)[1]) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert writer.counters()["dropped"] == 3 and writer.counters()["buffered"] == 5
    assert writer.status()[0] == "ERROR" and "3 results lost" in writer.status()[1]
    assert any("not recorded" in r.message and "max_buffered" in r.message for r in caplog.records)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert writer.close(30) and writer.counters()["written"] == 5


KILLED_WRITER = """
import sys, time
sys.path[:0] = {paths!r}
from record_helpers import part_result
from mentor3ad.records import RecordWriter
writer = RecordWriter({record!r}, batch_size=7)
for i in range(100000):
    writer.submit(part_result(i % 50, size=32)[1], part_id=f"K-{{i}}")
    if i % 20 == 0:
        print(writer.counters()["written"], flush=True)
    time.sleep(0.002)
"""


def test_kill_9_never_corrupts_the_record(tmp_path):
    record = tmp_path / "r.sqlite"
    code = KILLED_WRITER.format(paths=[str(REPO_ROOT / "src"), str(REPO_ROOT / "tests")], record=str(record))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    written = 0
    deadline = time.monotonic() + 60
    while written < 300 and time.monotonic() < deadline:
        written = int(proc.stdout.readline() or 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert written >= 300, "the writer did not get going"
    with sqlite3.connect(record) as db:  # opening it recovers the WAL
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT part_id) FROM results").fetchone()
    assert count == distinct >= written  # every acknowledged row is there, none twice
    writer = RecordWriter(record)  # and the record takes new results
    writer.submit(part_result(1)[1], part_id="after")
    assert writer.close() and RecordReader(record).search("after")[0]["part_id"] == "after"
