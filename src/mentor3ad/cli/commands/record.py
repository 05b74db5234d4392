"""``mentor3ad record``: look after an inspection record (SQLite file or ``postgresql://`` URL).

* ``record status --record R``: schema version, results per verdict, time span, models (JSON);
* ``record confirm --record R --part ID [--part ID ...] | --since T [--until T] [--verdict PASS]
  [--defective] --operator NAME [--note TEXT]``: an operator's word that these parts are good (or
  defective); ``mentor3ad calibrate --record`` re-calibrates from parts confirmed good;
* ``record add-model --record R --model M``: store a model's threshold and calibration scores (what the
  dashboard's drift indicator compares with; a node registers its model itself);
* ``record export --record R --out F.csv [--part ID] [--since T] [--until T] [--verdict V]``: the results
  as CSV (the dashboard's export);
* ``record init --record R``: create the record or migrate its schema.

Times: ``2026-05-20T08:00``, ``2026-05-20``, ``8h`` (8 hours ago) (:mod:`mentor3ad.records.timespec`).
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

VERDICTS = ("PASS", "FAIL", "ERROR", "SKIPPED")


def add_record_argument(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--record", required=required, metavar="PATH_OR_URL",
                   help="inspection record: SQLite file or postgresql://USER@HOST/DB")


def _add_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default=None, metavar="TIME", help="from this time (2026-05-20T08:00, 8h = 8 hours ago, ...)")
    p.add_argument("--until", default=None, metavar="TIME", help="up to this time (exclusive)")
    p.add_argument("--verdict", action="append", choices=VERDICTS, default=None, help="only these verdicts (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="inspection record: status, operator confirmations, models, CSV export",
                       description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="schema version, results per verdict, models (JSON)")
    add_record_argument(status)
    init = actions.add_parser("init", help="create the record or migrate its schema")
    add_record_argument(init)
    confirm = actions.add_parser("confirm", help="an operator confirms parts as good (or --defective)")
    add_record_argument(confirm)
    confirm.add_argument("--part", action="append", default=[], metavar="PART_ID", help="part id (repeatable)")
    _add_window(confirm)
    confirm.add_argument("--defective", action="store_true", help="the parts are defective (default: good)")
    confirm.add_argument("--operator", default=None, help="who confirms (default: the login name)")
    confirm.add_argument("--note", default="", help="free text kept with the confirmation (lot, audit reference)")
    model = actions.add_parser("add-model", help="store a model's threshold and calibration in the record")
    add_record_argument(model)
    model.add_argument("--model", type=Path, required=True, help="model file (.safetensors)")
    export = actions.add_parser("export", help="results as CSV")
    add_record_argument(export)
    export.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    export.add_argument("--part", default="", metavar="TEXT", help="part ids containing TEXT")
    _add_window(export)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return {"status": _status, "init": _init, "confirm": _confirm, "add-model": _add_model, "export": _export}[
        args.action](args)


def _status(args) -> int:
    from ...records.reader import RecordReader
    from ...records.schema import current_version

    reader = RecordReader(args.record)
    span = reader.session().query("SELECT MIN(decided_ns) AS first, MAX(decided_ns) AS last, COUNT(*) AS n "
                                  "FROM results")[0]
    from ...records.timespec import iso_utc

    print(json.dumps({"record": reader.database.describe(), "schema_version": current_version(reader.session()),
                      "results": int(span["n"]), "first": iso_utc(span["first"]), "last": iso_utc(span["last"]),
                      "verdicts": reader.verdict_counts(),
                      "models": [{"model_id": m.model_id, "threshold": m.threshold,
                                  "calibration_scores": len(m.calibration_scores), "parent_model_id": m.parent_model_id}
                                 for m in reader.models()],
                      "evidence_dir": str(reader.evidence_dir) if reader.evidence_dir else None}, indent=2))
    return 0


def _init(args) -> int:
    from ...records.admin import prepare
    from ...records.schema import SCHEMA_VERSION

    applied = prepare(args.record)
    print(f"mentor3ad record: {args.record} at schema version {SCHEMA_VERSION}"
          + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))
    return 0


def _confirm(args) -> int:
    from ...records.admin import confirm
    from ...records.timespec import parse_time

    operator = args.operator or getpass.getuser()
    count = confirm(args.record, "defective" if args.defective else "good", operator, args.note, args.part,
                    parse_time(args.since), parse_time(args.until), args.verdict)
    print(f"mentor3ad record: {count} result(s) confirmed {'defective' if args.defective else 'good'} by {operator}")
    return 0


def _add_model(args) -> int:
    from ...model.detector import Detector
    from ...records.admin import add_model
    from ...records.models import ModelRecord

    detector = Detector.load(args.model, self_test=False)
    model = ModelRecord.from_detector(detector, path=str(args.model))
    add_model(args.record, model)
    print(json.dumps({"model_id": model.model_id, "threshold": model.threshold,
                      "target_false_reject_rate": model.target_false_reject_rate,
                      "calibration_scores": len(model.calibration_scores)}))
    return 0


def _export(args) -> int:
    from ...io.files import atomic_write_text
    from ...records.reader import RecordReader, export_csv
    from ...records.timespec import parse_time

    reader = RecordReader(args.record)
    chunks = export_csv(reader, args.part, parse_time(args.since), parse_time(args.until), args.verdict)
    if args.out is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        return 0
    text = "".join(chunks)
    atomic_write_text(args.out, text)
    print(f"mentor3ad record: {text.count(chr(10)) - 1} results written to {args.out}", file=sys.stderr)
    return 0
