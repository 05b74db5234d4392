"""The operator dashboard: a Dash (Flask + Plotly) page over an inspection record, read-only.

:func:`create_app` builds the app for a :class:`~mentor3ad.records.reader.RecordReader`; :func:`serve`
runs it with waitress. The page refreshes every ``refresh_s``: counts and yield of the chosen window, parts
and yield per hour, the live stream (newest parts with thumbnails), the last FAIL parts with their overlays
and regions, the score distribution per model and part type against the threshold and the calibration
scores, the drift indicator per model; a search by part id and time range with a CSV export link.

Routes besides Dash's own: ``/evidence/<path>`` (files of the evidence folder, nothing outside it) and
``/export.csv?part=&since=&until=&verdict=``. All JavaScript is served from the installed packages
(``serve_locally``): the page works without internet access.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Dict, List, Optional
from urllib.parse import urlencode

from dash import Dash, Input, Output, State, dcc, html, no_update

from ..errors import ConfigError, Mentor3ADError
from ..records.drift import DRIFT_FACTOR, RECENT_GOOD_PARTS, DriftEstimate, drift_estimate
from ..records.reader import RecordReader, export_csv
from ..records.timespec import format_time, parse_time
from . import views
from .figures import hourly_figure, model_options, score_figure
from .security import install_token_guard

LOG = logging.getLogger("mentor3ad.dashboard")
WINDOWS = {"8h": 8 * 3600, "24h": 24 * 3600, "7d": 7 * 86400}
STREAM_ROWS, FAILURE_CARDS, SCORE_PARTS = 15, 6, 500


def create_app(reader: RecordReader, token: Optional[str] = None, refresh_s: float = 2.0,
               drift_factor: float = DRIFT_FACTOR) -> Dash:
    """The dashboard app of ``reader``'s record; with ``token`` every request must present it."""
    app = Dash(__name__, title=f"mentor3ad: {reader.database.describe()}", update_title=None, serve_locally=True,
               include_assets_files=False, suppress_callback_exceptions=True)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + views.STYLE + "</style>")
    install_token_guard(app.server, token)
    _add_routes(app.server, reader)
    app.layout = _layout(reader, refresh_s)
    _add_callbacks(app, reader, drift_factor)
    return app


def evidence_url(reader: RecordReader, relative: Optional[str]) -> Optional[str]:
    return f"/evidence/{relative}" if reader.evidence_path(relative) is not None else None


def _layout(reader: RecordReader, refresh_s: float) -> html.Div:
    return html.Div([
        html.H1(f"mentor3ad inspection record: {reader.database.describe()}"),
        html.Div(id="status", className="status"),
        dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
        html.Div(["counts of the last ", dcc.RadioItems(id="window", options=list(WINDOWS), value="24h", inline=True,
                                                        style={"display": "inline-block"})]),
        html.Div(id="tiles", className="tiles"),
        dcc.Graph(id="hourly", config={"displaylogo": False}),
        html.Div([
            html.Div([html.H2("live: newest parts"), html.Div(id="stream")]),
            html.Div([html.H2("last failures"), html.Div(id="failures", className="failures")]),
        ], className="columns"),
        html.Div([
            html.Div([
                html.H2("scores of recent parts against the threshold"),
                html.Div([dcc.Dropdown(id="model-filter", options=model_options([]), value="", clearable=False,
                                       style={"width": "16em", "display": "inline-block"}),
                          dcc.Dropdown(id="type-filter", options=[{"label": "all part types", "value": ""}], value="",
                                       clearable=False, style={"width": "16em", "display": "inline-block"})]),
                dcc.Graph(id="scores", config={"displaylogo": False})]),
            html.Div([
                html.H2("drift: expected false-reject rate of good parts"),
                html.Div(id="drift"),
                html.P(f"Now: from the newest {RECENT_GOOD_PARTS} good parts (PASS parts not confirmed defective, FAIL "
                       "parts confirmed good with 'mentor3ad record confirm'); unconfirmed FAIL parts are left out, so "
                       "it is a lower bound while false rejects go unconfirmed. At calibration: from the model's "
                       "calibration scores. DRIFT when now exceeds the factor times the target.", className="status")]),
        ], className="columns"),
        html.H2("search"),
        html.Div([dcc.Input(id="search-part", placeholder="part id contains", debounce=True),
                  dcc.Input(id="search-since", type="datetime-local"), " to ",
                  dcc.Input(id="search-until", type="datetime-local"),
                  dcc.Checklist(id="search-verdicts", options=list(views.VERDICTS), value=[], inline=True,
                                style={"display": "inline-block"}),
                  html.Button("search", id="search-button"), " ",
                  html.A("export CSV", id="export-link", href="/export.csv", download="mentor3ad_results.csv")],
                 className="search"),
        html.Div(id="search-message", className="message"),
        html.Div(id="search-results"),
    ])


def _most_common_threshold(rows: List[Dict[str, Any]], model_id: str) -> float:
    values = Counter(float(r["threshold"]) for r in rows if r["model_id"] == model_id and r.get("threshold") is not None)
    return values.most_common(1)[0][0] if values else math.nan


def drift_estimates(reader: RecordReader, factor: float) -> List[DriftEstimate]:
    """One estimate per model with recent decided parts (newest first)."""
    rows = reader.scores(limit=SCORE_PARTS)
    model_ids = list(dict.fromkeys(r["model_id"] for r in rows if r["model_id"]))
    out = []
    for model_id in model_ids:
        model = reader.model(model_id)
        threshold = _most_common_threshold(rows, model_id)
        if not math.isfinite(threshold) and model is not None:
            threshold = model.threshold
        scores = reader.good_scores(reader.lineage(model_id), RECENT_GOOD_PARTS)
        out.append(drift_estimate(model_id, scores, threshold, model, factor))
    return out


def _add_callbacks(app: Dash, reader: RecordReader, drift_factor: float) -> None:
    def url(relative: Optional[str]) -> Optional[str]:
        return evidence_url(reader, relative)

    @app.callback(Output("status", "children"), Output("status", "className"), Output("tiles", "children"),
                  Output("hourly", "figure"), Output("stream", "children"), Output("failures", "children"),
                  Output("drift", "children"), Output("model-filter", "options"), Output("type-filter", "options"),
                  Input("tick", "n_intervals"), Input("window", "value"))
    def refresh(_tick, window):
        now = time.time_ns()
        since = now - WINDOWS.get(window, WINDOWS["24h"]) * 1_000_000_000
        try:
            counts = reader.verdict_counts(since)
            hourly = reader.hourly_counts(since)
            stream = reader.recent(STREAM_ROWS)
            failures = reader.recent(FAILURE_CARDS, verdicts=["FAIL"])
            estimates = drift_estimates(reader, drift_factor)
            models = [m.model_id for m in reader.models()]
            types = reader.part_types()
        except Mentor3ADError as err:
            message = f"{format_time(now)}: {err}"
            return (message, "status down") + (no_update,) * 7
        status = f"updated {format_time(now)}; {sum(counts.values())} results in the last {window}"
        return (status, "status", views.tiles(counts, window), hourly_figure(hourly, since, now),
                views.results_table(stream, url, "stream-table"), views.failure_cards(failures, url),
                views.drift_table(estimates), model_options(models),
                [{"label": "all part types", "value": ""}] + [{"label": t, "value": t} for t in types])

    @app.callback(Output("scores", "figure"), Input("tick", "n_intervals"), Input("model-filter", "value"),
                  Input("type-filter", "value"))
    def scores(_tick, model_id, part_type):
        try:
            rows = reader.scores(model_id or None, part_type or None, SCORE_PARTS)
            model = reader.model(model_id) if model_id else None
        except Mentor3ADError:
            return no_update
        title = f"newest {len(rows)} decided parts" + (f" of model {model_id}" if model_id else "") + \
            (f", part type {part_type}" if part_type else "")
        return score_figure(rows, model.calibration_scores if model is not None else (), title)

    @app.callback(Output("search-results", "children"), Output("search-message", "children"),
                  Output("export-link", "href"), Input("search-button", "n_clicks"), Input("search-part", "n_submit"),
                  State("search-part", "value"), State("search-since", "value"), State("search-until", "value"),
                  State("search-verdicts", "value"), prevent_initial_call=True)
    def search(_clicks, _submit, part, since, until, verdicts):
        try:
            since_ns, until_ns = parse_time(since), parse_time(until)
            rows = reader.search(part or "", since_ns, until_ns, verdicts or None)
        except Mentor3ADError as err:
            return no_update, str(err), no_update
        query = urlencode([("part", part or ""), ("since", since or ""), ("until", until or "")]
                          + [("verdict", v) for v in verdicts or []])
        note = f"{len(rows)} results" + (" (the newest 500; export gives all)" if len(rows) >= 500 else "")
        return [html.P(note), views.results_table(rows, url, "search-table", full=True)], "", f"/export.csv?{query}"


def _add_routes(server, reader: RecordReader) -> None:
    from flask import Response, abort, request, send_file, stream_with_context

    @server.route("/evidence/<path:relative>")
    def evidence(relative: str):
        path = reader.evidence_path(relative)
        if path is None:
            abort(404)
        return send_file(path, max_age=3600)

    @server.route("/export.csv")
    def export():
        try:
            since, until = parse_time(request.args.get("since")), parse_time(request.args.get("until"))
        except ConfigError as err:
            return Response(f"{err}\n", status=400, mimetype="text/plain")
        verdicts = [v for v in request.args.getlist("verdict") if v in views.VERDICTS] or None
        chunks = export_csv(reader, request.args.get("part", ""), since, until, verdicts)
        return Response(stream_with_context(chunks), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=mentor3ad_results.csv"})


def serve(app: Dash, host: str = "127.0.0.1", port: int = 8050, threads: int = 4) -> None:
    """Serve the app with waitress until interrupted."""
    from waitress import serve as waitress_serve

    waitress_serve(app.server, host=host, port=port, threads=threads, ident="mentor3ad")


__all__ = ["create_app", "serve", "drift_estimates", "evidence_url"]
