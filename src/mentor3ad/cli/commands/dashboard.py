"""``mentor3ad dashboard --record PATH_OR_URL``: the operator's web page over an inspection record.

Read-only (the record is opened read-only); listens on 127.0.0.1:8050 by default. ``--host 0.0.0.0`` (or
any address other machines reach) needs an access token: ``--token T`` or $MENTOR3AD_DASHBOARD_TOKEN; the
browser then opens ``http://HOST:PORT/?token=T`` once (a cookie keeps it). The page's JavaScript comes from
the installed packages: it works without internet access.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .record import add_record_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="operator web page over an inspection record (read-only)",
                       description=__doc__.split("\n\n")[0])
    add_record_argument(p)
    p.add_argument("--evidence-dir", type=Path, default=None,
                   help="evidence folder (default: <record>.evidence beside a SQLite file; needed for PostgreSQL)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.add_argument("--token", default=None, help="access token (required when --host is not a loopback address; "
                                                   "or set $MENTOR3AD_DASHBOARD_TOKEN)")
    p.add_argument("--refresh-s", type=float, default=2.0, help="seconds between page updates (default 2)")
    p.add_argument("--wait-s", type=float, default=0.0,
                   help="wait up to this many seconds for the record to appear (started beside the inspector that "
                        "creates it, e.g. inspect.launch.py dashboard:=true); default 0: fail at once")
    p.add_argument("--drift-factor", type=float, default=2.0,
                   help="drift warning when the good parts' expected false-reject rate exceeds this many times the "
                        "calibration target (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...errors import ConfigError
    from ...dashboard.security import resolve_token
    from ...records.database import RecordError
    from ...records.reader import RecordReader

    token = resolve_token(args.host, args.token)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    if args.refresh_s < 0.2:
        raise ConfigError(f"--refresh-s must be at least 0.2, got {args.refresh_s}")
    reader = RecordReader(args.record, args.evidence_dir)
    deadline = time.monotonic() + max(0.0, args.wait_s)
    while True:
        try:
            reader.session()  # reachable and readable now, or a one-line error
            break
        except RecordError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    from ...dashboard.app import create_app, serve

    app = create_app(reader, token, args.refresh_s, args.drift_factor)
    address = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"mentor3ad dashboard: {reader.database.describe()} on {address}"
          + ("?token=<your token>" if token else ""), flush=True)
    serve(app, args.host, args.port)
    return 0
