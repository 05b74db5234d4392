"""The inspection record of the node: every answered part (PASS / FAIL / ERROR / SKIPPED) appended to a
record (:mod:`mentor3ad.records`: a SQLite file, ``record_path``, or a PostgreSQL server, ``record_url``).

A thin adapter around :class:`~mentor3ad.records.RecordWriter`: :meth:`Record.publish` hands the result
(with the image's stamp and frame) and the part's RGB image to the writer, which returns at once; the
writer's own thread renders the overlay, writes the evidence files (thumbnail of every part; image and
overlay of FAIL / ERROR parts) and the rows. A slow or unreachable database never delays a verdict: rows
wait in the writer's bounded buffer and are retried. Every model the node loads is registered (threshold
and calibration, for the dashboard's drift indicator and ``mentor3ad calibrate --record``). The writer's
counters and status reach ``/diagnostics`` (``record_*`` values; WARN while the database cannot be written,
ERROR once a result was lost). At shutdown the buffer is written for at most ``CLOSE_TIMEOUT_S`` seconds;
what is still unwritten then is counted as lost and logged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ....errors import ConfigError
from ...params import ParamSpec
from ..part import JudgedPart
from . import Output, register_output

CLOSE_TIMEOUT_S = 2.0  # flush at shutdown; ros2 launch escalates to SIGTERM 5 s after its SIGINT
COUNTERS = ("submitted", "written", "buffered", "oldest_buffered_s", "retried", "dropped", "failed_attempts",
            "database_up", "last_error", "evidence_files", "evidence_dropped", "evidence_errors", "models_registered")


def _path_problem(value: str) -> Optional[str]:
    return "a file path; a database URL goes into record_url" if "://" in value else None


def _url_problem(value: str) -> Optional[str]:
    if not value:
        return None
    if "://" not in value:
        return "a URL such as postgresql://USER@HOST/DB; a SQLite file goes into record_path"
    from ....records.database import open_database

    try:
        open_database(value)
    except ConfigError as exc:
        return str(exc)
    return None


@register_output
class Record(Output):
    """Appends every answered part to the inspection record (see the module docstring)."""

    name, order = "record", 90
    PARAMETERS = [
        ParamSpec("record_path", "", "SQLite file of the inspection record: every answered part is appended "
                  "(PASS/FAIL/ERROR/SKIPPED, score, threshold, model, latency, regions), with evidence pictures "
                  "in the folder record_path + '.evidence'; created when missing. Empty: no record (unless "
                  "record_url). Set record_path or record_url, not both (refused at start-up).", read_only=True,
                  check=_path_problem),
        ParamSpec("record_url", "", "Inspection record on a database server instead of a file: "
                  "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (several cells may write to one server). Evidence "
                  "pictures only with record_evidence_dir.", read_only=True, check=_url_problem),
        ParamSpec("record_cell", "", "Cell name stored with every recorded part (tells cells apart in a shared "
                  "record); empty: the node's fully qualified name.", read_only=True),
        ParamSpec("record_part_type", "", "Part type stored with every recorded part from now on (the dashboard "
                  "shows scores per part type; change it at a product changeover); empty: none."),
        ParamSpec("record_evidence_dir", "", "Folder of the evidence pictures; empty: record_path + '.evidence' "
                  "beside a SQLite record, none with record_url.", read_only=True),
        ParamSpec("record_evidence_mb", 2048, "Size budget of the evidence folder in MiB: above it the oldest "
                  "pictures are deleted first, PASS before ERROR before FAIL (by age too: PASS and SKIPPED after "
                  "7 days, ERROR 90, FAIL 365).", read_only=True, minimum=1),
    ]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.writer = None
        path, url = self.param("record_path"), self.param("record_url")
        if path and url:
            raise ConfigError("set record_path (a SQLite file) or record_url (a database server), not both")
        if not (path or url):
            return
        from ....records import RecordWriter, RetentionPolicy

        evidence_dir = self.param("record_evidence_dir")
        self.writer = RecordWriter(path or url, cell=self.param("record_cell") or node.get_fully_qualified_name(),
                                   evidence_dir=Path(evidence_dir) if evidence_dir else None,
                                   retention=RetentionPolicy(max_bytes=int(self.param("record_evidence_mb")) << 20))
        self.where = self.writer.database.describe()
        node.get_logger().info(f"recording every part in {self.where}" + (
            f" (evidence in {self.writer.evidence.root})" if self.writer.evidence is not None else ""))
        node.inspector.model.on_loaded(self._register)  # the model serving now, and every later load

    def _register(self, detector: Any, path: str) -> None:
        from ....records import ModelRecord

        self.writer.register_model(ModelRecord.from_detector(detector, path))

    def publish(self, part: JudgedPart) -> None:
        if self.writer is None:
            return
        from ....io.msgconv import stamp_to_ns
        from ....records import Evidence

        result = part.result.replace(stamp_ns=stamp_to_ns(part.header.stamp), frame_id=part.header.frame_id)
        # the overlay is rendered on the writer's thread, from the result's anomaly map
        self.writer.submit(result, Evidence(rgb=part.rgb) if part.rgb is not None else None,
                           part_type=self.param("record_part_type") or None)

    def diagnostics(self):
        if self.writer is None:
            return "OK", "", {"record": "off"}
        counters = self.writer.counters()
        level, message = self.writer.status()
        values = {"record": self.where}
        values.update({f"record_{key}": (f"{counters[key]:.1f}" if key == "oldest_buffered_s" else counters[key])
                       for key in COUNTERS})
        return level, message, values

    def close(self) -> None:
        if self.writer is None:
            return
        complete = self.writer.close(CLOSE_TIMEOUT_S)
        counters = self.writer.counters()
        text = f"inspection record {self.where}: {counters['written']} results recorded, {counters['dropped']} lost"
        if complete and not counters["dropped"]:
            self.node.get_logger().info(text)
        else:
            self.node.get_logger().error(text + (f" (last error: {counters['last_error']})"
                                                 if counters["last_error"] else ""))


__all__ = ["Record", "CLOSE_TIMEOUT_S"]
