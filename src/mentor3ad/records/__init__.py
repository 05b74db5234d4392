"""The inspection record: every result kept in a database for audit, the operator's dashboard and
re-calibration (no ROS import; the node-side writer is a thin adapter around :class:`RecordWriter`).

* :mod:`.database`: SQLite file (default: WAL, transactions) or PostgreSQL URL (psycopg 3), one dialect;
* :mod:`.schema`: the versioned schema and its migrations;
* :mod:`.writer`: :class:`RecordWriter`: ``submit(result, evidence)`` never blocks, buffered, retried, counted;
* :mod:`.evidence`: pictures of FAIL / ERROR parts (and thumbnails) beside the record, with retention;
* :mod:`.reader`: the queries of the dashboard, the CSV export and re-calibration;
* :mod:`.admin`: synchronous writes from the command line (schema, models, operator confirmations);
* :mod:`.models`: what the record keeps about a model (threshold, calibration scores);
* :mod:`.drift`: expected false-reject rate of recent good parts vs calibration.
"""
from .evidence import Evidence, RetentionPolicy
from .models import ModelRecord
from .reader import RecordReader
from .writer import RecordWriter

__all__ = ["RecordWriter", "RecordReader", "Evidence", "RetentionPolicy", "ModelRecord"]
