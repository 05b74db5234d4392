"""`mentor3ad record ...` on real records."""
import csv
import io
import json

from helpers import run_mentor3ad
from record_helpers import fill_record
from mentor3ad.records import RecordWriter


def test_record_init_confirm_status_and_export(tmp_path):
    record = tmp_path / "line.sqlite"
    code, _, output = run_mentor3ad("record", "status", "--record", record)
    assert code == 1 and "no inspection record at" in output and "Traceback" not in output
    code, stdout, output = run_mentor3ad("record", "init", "--record", record)
    assert code == 0 and "schema version 1 (applied 1)" in stdout, output
    writer = RecordWriter(record, cell="cell-1")
    fill_record(writer, 10)
    assert writer.close()
    code, stdout, output = run_mentor3ad("record", "confirm", "--record", record, "--part", "P-00004", "--part",
                                         "P-00003", "--operator", "alice", "--note", "lot 17 audit")
    assert code == 0 and "2 result(s) confirmed good by alice" in stdout, output
    code, _, output = run_mentor3ad("record", "confirm", "--record", record, "--part", "P-99999", "--operator", "al")
    assert code == 1 and "no results" in output
    code, _, output = run_mentor3ad("record", "confirm", "--record", record, "--since", "yesterday noon")
    assert code == 2 and "cannot read the time 'yesterday noon'" in output
    code, stdout, _ = run_mentor3ad("record", "status", "--record", record)
    status = json.loads(stdout)
    assert status["results"] == 10 and status["verdicts"] == {"PASS": 8, "FAIL": 2} and status["schema_version"] == 1
    out = tmp_path / "fails.csv"
    code, _, output = run_mentor3ad("record", "export", "--record", record, "--verdict", "FAIL", "--since", "1h",
                                    "--out", out)
    assert code == 0, output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["part_id"] for r in rows] == ["P-00004", "P-00009"]
    assert rows[0]["confirmed"] == "good" and rows[1]["confirmed"] == "" and rows[0]["decided_utc"].endswith("Z")
    assert float(rows[0]["score"]) > float(rows[0]["threshold"]) and json.loads(rows[0]["regions"])
