"""The inspection record on a real PostgreSQL server (started by conftest.py): 1000 results written while
the server is stopped and restarted, several cells writing at once, and every reader query on this dialect."""
import statistics
import threading
import time

import numpy as np
import pytest

from record_helpers import MODEL_ID, THRESHOLD, calibration_scores, fill_record, part_result
from mentor3ad.records import Evidence, ModelRecord, RecordReader, RecordWriter
from mentor3ad.records.admin import add_model, confirm
from mentor3ad.records.reader import export_csv


def _percentiles(values):
    ordered = np.sort(np.asarray(values) * 1e3)
    return {"n": len(values), "p50_ms": float(np.percentile(ordered, 50)), "p99_ms": float(np.percentile(ordered, 99)),
            "max_ms": float(ordered[-1])}


def test_1000_results_across_a_server_stop_and_restart_are_recorded_exactly_once(postgres, postgres_db, tmp_path):
    distinct = [part_result(i, size=48) for i in range(50)]
    parts = [distinct[i % 50] for i in range(1000)]
    writer = RecordWriter(postgres_db, cell="cell-1", evidence_dir=tmp_path / "evidence", retry_max_s=0.5)
    phase, latency = ["up"], {"up": [], "down": [], "restarted": []}
    submitted = [0]

    def operator():  # takes the server down a third of the way in and brings it back two thirds in
        while submitted[0] < 330:
            time.sleep(0.005)
        postgres.stop("fast")
        phase[0] = "down"
        deadline = time.monotonic() + 20
        while (submitted[0] < 660 or writer.counters()["failed_attempts"] < 1) and time.monotonic() < deadline:
            time.sleep(0.005)
        postgres.start()
        phase[0] = "restarted"

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        for index, (rgb, result) in enumerate(parts):
            started = time.perf_counter()
            accepted = writer.submit(result, Evidence(rgb=rgb), part_id=f"P-{index:05d}", part_type="gland")
            latency[phase[0]].append(time.perf_counter() - started)
            assert accepted
            submitted[0] += 1
            time.sleep(0.005)
        thread.join(120)
    finally:
        if phase[0] == "down":
            postgres.start()
    assert writer.close(60), writer.counters()
    counters = writer.counters()
    stats = {name: _percentiles(values) for name, values in latency.items() if values}
    print(f"\nsubmit latency by database state: {stats}\nwriter counters: {counters}")
    assert counters["written"] == 1000 and counters["dropped"] == 0 and counters["buffered"] == 0
    assert counters["failed_attempts"] >= 1 and counters["retried"] > 0  # the outage was real and was bridged
    assert len(latency["down"]) > 50
    # submit never waits for the database: the same sub-millisecond cost whether it is up or down
    for name in ("down", "restarted"):
        assert stats[name]["p50_ms"] < max(3 * stats["up"]["p50_ms"], 0.5), stats
        assert stats[name]["p99_ms"] < 5.0 and stats[name]["max_ms"] < 100.0, stats
    reader = RecordReader(postgres_db)
    row = reader.session().query("SELECT COUNT(*) AS n, COUNT(DISTINCT part_id) AS parts, COUNT(DISTINCT uid) AS uids "
                                 "FROM results")[0]
    assert (row["n"], row["parts"], row["uids"]) == (1000, 1000, 1000)
    ids = {r["part_id"] for r in reader.search(limit=2000)}
    assert ids == {f"P-{i:05d}" for i in range(1000)}


def test_several_cells_write_to_one_server_at_once(postgres_db):
    writers = [RecordWriter(postgres_db, cell=f"cell-{k}") for k in range(3)]  # all migrate the empty database
    threads = [threading.Thread(target=fill_record, args=(w, 40, 100 * k)) for k, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(w.close(60) for w in writers)
    rows = RecordReader(postgres_db).session().query(
        "SELECT cell, COUNT(*) AS n FROM results GROUP BY cell ORDER BY cell")
    assert [(r["cell"], r["n"]) for r in rows] == [("cell-0", 40), ("cell-1", 40), ("cell-2", 40)]
    versions = RecordReader(postgres_db).session().query("SELECT COUNT(*) AS n FROM schema_version")[0]["n"]
    assert versions == 1  # one migration, applied once


def test_every_reader_query_works_on_postgresql(postgres_db):
    writer = RecordWriter(postgres_db, cell="cell-1")
    fill_record(writer, 20)
    assert writer.close(60)
    add_model(postgres_db, ModelRecord(MODEL_ID, THRESHOLD, 0.01, "tail", calibration_scores(), 0.004))
    add_model(postgres_db, ModelRecord("recalibrated", 0.8, 0.01, parent_model_id=MODEL_ID))
    reader = RecordReader(postgres_db)
    assert reader.verdict_counts() == {"PASS": 16, "FAIL": 4}
    (hour, _, _), = {(h, None, None) for h, _, _ in reader.hourly_counts(0)}
    assert sum(n for _, _, n in reader.hourly_counts(0)) == 20 and hour % 3_600_000_000_000 == 0
    assert [r["part_id"] for r in reader.search("p-0001")] == [f"P-{i:05d}" for i in range(19, 9, -1)]
    assert reader.search("50%") == [] and len(reader.search(since_ns=0, verdicts=["FAIL"])) == 4
    assert len(reader.scores(MODEL_ID, "gland")) == 10
    assert reader.lineage("recalibrated") == ["recalibrated", MODEL_ID]
    assert reader.model(MODEL_ID).calibration_scores == pytest.approx(calibration_scores())
    assert confirm(postgres_db, "good", "alice", part_ids=["P-00004"]) == 1
    assert len(reader.good_scores([MODEL_ID], confirmed_only=True)) == 1 and len(reader.good_scores([MODEL_ID])) == 17
    lines = "".join(export_csv(reader, verdicts=["FAIL"])).splitlines()
    assert len(lines) == 5 and lines[0].startswith("decided_utc,part_id") and ",good," in lines[1]
    import psycopg
    with pytest.raises(psycopg.Error, match="read-only"):
        reader.session().execute("DELETE FROM results")  # the dashboard's sessions cannot write
    assert statistics.mean(r["score"] for r in reader.recent(20)) > 0
