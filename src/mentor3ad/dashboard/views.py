"""The dashboard's page parts as Dash components, built from rows of the record (no queries here)."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence

from dash import html

from ..records.drift import DriftEstimate
from ..records.timespec import format_time
from .figures import VERDICT_COLOURS, yield_of

EvidenceUrl = Callable[[Optional[str]], Optional[str]]
VERDICTS = ("PASS", "FAIL", "ERROR", "SKIPPED")


def _number(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}g}" if value is not None and math.isfinite(float(value)) else "-"


def _percent(rate: float) -> str:
    if rate is None or not math.isfinite(rate):
        return "-"
    return "< 0.01 %" if 0 < 100 * rate < 0.01 else f"{100 * rate:.3g} %"


def verdict_badge(verdict: str) -> html.Span:
    return html.Span(verdict, className=f"badge {verdict}", style={"background": VERDICT_COLOURS.get(verdict, "#555")})


def tiles(counts: Dict[str, int], window: str) -> List[html.Div]:
    """One tile per verdict (ids ``count-<VERDICT>``) and the yield tile (id ``yield``)."""
    out = [html.Div([html.Div(f"{verdict} ({window})", className="label"),
                     html.Div(str(counts.get(verdict, 0)), id=f"count-{verdict}", className="value")],
                    className=f"tile {verdict}") for verdict in VERDICTS]
    rate = yield_of(counts)
    out.append(html.Div([html.Div(f"yield ({window})", className="label"),
                         html.Div("-" if math.isnan(rate) else f"{100 * rate:.1f} %", id="yield", className="value"),
                         html.Div("PASS of PASS + FAIL + ERROR", className="note")], className="tile yield"))
    return out


def _picture(url: Optional[str], alt: str, class_name: str, missing: str) -> html.Component:
    return html.Img(src=url, alt=alt, className=class_name) if url else html.Span(missing, className="missing")


def _part(row: Dict[str, Any]) -> str:
    return row.get("part_id") or "(no part id)"


def _score_cell(row: Dict[str, Any], width: int = 0) -> str:
    if row.get("score") is None:
        reason = row.get("reason") or "-"
        return reason[:width - 1] + "…" if width and len(reason) > width else reason
    relation = ">" if row["verdict"] == "FAIL" else "<="
    return f"{_number(row['score'])} {relation} {_number(row.get('threshold'))}"


def results_table(rows: Sequence[Dict[str, Any]], evidence_url: EvidenceUrl, table_id: str,
                  full: bool = False) -> html.Table:
    """Time, part, type, cell, verdict, score vs threshold (or the reason, shortened unless ``full``), latency,
    thumbnail; ``full`` (search results) adds the date and the model."""
    titles = ["time", "part", "type", "cell", "verdict", "score vs threshold", "latency ms", "picture"]
    if full:
        titles.insert(7, "model")
    body = []
    for row in rows:
        thumbnail = evidence_url(row.get("thumbnail"))
        cells = [html.Td(format_time(row["decided_ns"], full)), html.Td(_part(row)), html.Td(row.get("part_type") or ""),
                 html.Td(row.get("cell") or ""), html.Td(verdict_badge(row["verdict"])),
                 html.Td(_score_cell(row, 0 if full else 28), title=row.get("reason") or ""),
                 html.Td(_number(row.get("latency_ms"), 3)),
                 html.Td(_picture(thumbnail, f"{_part(row)} {row['verdict']}", "thumbnail", ""))]
        if full:
            cells.insert(7, html.Td(row.get("model_id") or ""))
        body.append(html.Tr(cells, className=f"row-{row['verdict']}"))
    if not body:
        body = [html.Tr(html.Td("no results", colSpan=len(titles)))]
    return html.Table([html.Thead(html.Tr([html.Th(t) for t in titles])), html.Tbody(body)], id=table_id,
                      className="results")


def _regions(row: Dict[str, Any]) -> List[html.Li]:
    try:
        regions = json.loads(row.get("regions") or "[]")
    except ValueError:
        regions = []
    items = []
    for index, region in enumerate(regions, 1):
        x0, y0, x1, y1 = region.get("bbox", (0, 0, 0, 0))
        area = region.get("area_mm2")
        items.append(html.Li(f"#{index}: pixels ({x0}, {y0})-({x1}, {y1}), {region.get('area_px', 0)} px"
                             + (f", {area:.3g} mm²" if isinstance(area, (int, float)) else "")
                             + f", peak {_number(region.get('peak_score'))}"))
    return items or [html.Li("no region above the threshold")]


def failure_cards(rows: Sequence[Dict[str, Any]], evidence_url: EvidenceUrl) -> List[html.Div]:
    """The last FAIL parts: overlay (heatmap with colour scale, regions boxed), score, regions, image link."""
    cards = []
    for row in rows:
        overlay = evidence_url(row.get("overlay")) or evidence_url(row.get("thumbnail"))
        image = evidence_url(row.get("image"))
        cards.append(html.Div([
            _picture(overlay, f"overlay of {_part(row)}", "overlay", "evidence expired or not recorded"),
            html.Div([html.B(_part(row)), " ", verdict_badge(row["verdict"])], className="title"),
            html.Div(f"{format_time(row['decided_ns'])}, {row.get('cell') or ''} {row.get('part_type') or ''}"),
            html.Div(f"score {_score_cell(row)}, model {row.get('model_id') or '-'}"),
            html.Ul(_regions(row), className="regions"),
            html.A("RGB image", href=image, target="_blank") if image else None,
        ], className="failure"))
    return cards or [html.Div("no FAIL parts in the record", className="missing")]


def drift_table(estimates: Sequence[DriftEstimate]) -> html.Table:
    """Per model: threshold, target, expected false-reject rate at calibration and now (its 5-95 % interval and
    the whole message on hover), status."""
    header = html.Tr([html.Th(h) for h in ("model", "threshold", "target", "at calibration", "now", "good parts",
                                           "status")])
    body = []
    for e in estimates:
        status = {"ok": "OK", "warn": f"DRIFT: > {e.factor:g}x", "unknown": "unknown"}[e.status]
        body.append(html.Tr([
            html.Td(e.model_id), html.Td(_number(e.threshold)), html.Td(_percent(e.target)),
            html.Td(_percent(e.expected_at_calibration)),
            html.Td(_percent(e.expected_now), title=f"5-95 %: {_percent(e.low)} - {_percent(e.high)}"),
            html.Td(str(e.n_good)), html.Td(html.Span(status, className=f"drift {e.status}"), title=e.message),
        ]))
    if not body:
        body = [html.Tr(html.Td("no decided parts yet", colSpan=7))]
    return html.Table([html.Thead(header), html.Tbody(body)], id="drift-table", className="results wrap")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0.6em 0 0.2em; } h2 { font-size: 1.1em; margin: 1em 0 0.4em; }
.status { color: #555; font-size: 0.9em; } .status.down { color: #c62828; font-weight: bold; }
.tiles { display: flex; gap: 0.8em; flex-wrap: wrap; }
.tile { background: white; border-radius: 6px; padding: 0.5em 1em; min-width: 8em; box-shadow: 0 1px 3px #0002;
        border-top: 5px solid #999; }
.tile.PASS { border-color: #2e7d32; } .tile.FAIL { border-color: #c62828; } .tile.ERROR { border-color: #ef6c00; }
.tile.yield { border-color: #1565c0; } .tile .value { font-size: 1.8em; font-weight: bold; }
.tile .label, .tile .note { font-size: 0.8em; color: #555; }
.columns { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.5em; }
.columns > div { overflow-x: auto; }
table.results { border-collapse: collapse; width: 100%; background: white; font-size: 0.85em; }
table.results th, table.results td { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: left;
                                     white-space: nowrap; }
table.results.wrap td, table.results.wrap th { white-space: normal; }
.badge { color: white; border-radius: 3px; padding: 0 5px; font-weight: bold; font-size: 0.85em; }
img.thumbnail { height: 48px; } img.overlay { width: 100%; max-width: 320px; display: block; }
.failures { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 0.8em; }
.failure { background: white; padding: 0.5em; border-radius: 6px; box-shadow: 0 1px 3px #0002; font-size: 0.85em; }
.regions { margin: 0.2em 0; padding-left: 1.2em; } .missing { color: #888; font-style: italic; }
.drift { font-weight: bold; } .drift.warn { color: #c62828; } .drift.ok { color: #2e7d32; } .drift.unknown { color: #777; }
.search input { margin-right: 0.5em; } .message { color: #c62828; }
"""


__all__ = ["tiles", "results_table", "failure_cards", "drift_table", "verdict_badge", "STYLE"]
