"""The dashboard's charts (Plotly figures): parts and yield per hour, and the score distribution of recent
parts against the threshold and the calibration scores."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

import plotly.graph_objects as go

from ..records.reader import HOUR_NS

VERDICT_COLOURS = {"PASS": "#2e7d32", "FAIL": "#c62828", "ERROR": "#ef6c00", "SKIPPED": "#9e9e9e"}
LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=40), height=300, legend=dict(orientation="h", y=-0.2),
              template="plotly_white")


def yield_of(counts: Dict[str, int]) -> float:
    """PASS / (PASS + FAIL + ERROR): the share of inspected parts accepted (SKIPPED parts were not inspected);
    NaN without parts."""
    inspected = sum(counts.get(v, 0) for v in ("PASS", "FAIL", "ERROR"))
    return counts.get("PASS", 0) / inspected if inspected else math.nan


def hourly_figure(hourly: Sequence[Tuple[int, str, int]], since_ns: int, until_ns: int) -> go.Figure:
    """Stacked parts per verdict per hour (local time) and the yield per hour (right axis, %)."""
    hours = list(range(since_ns // HOUR_NS, until_ns // HOUR_NS + 1))
    per_hour: Dict[int, Counter] = defaultdict(Counter)
    for start_ns, verdict, count in hourly:
        per_hour[start_ns // HOUR_NS][verdict] += count
    x = [datetime.fromtimestamp(h * 3600) for h in hours]
    figure = go.Figure()
    for verdict, colour in VERDICT_COLOURS.items():
        y = [per_hour[h][verdict] for h in hours]
        if any(y):
            figure.add_bar(x=x, y=y, name=verdict, marker_color=colour, offset=0, width=3_600_000 * 0.9,
                           hovertemplate="%{x|%H:00} %{y} " + verdict + "<extra></extra>")
    yields = [100 * yield_of(per_hour[h]) if per_hour[h] else None for h in hours]
    figure.add_scatter(x=[t.replace(minute=30) for t in x], y=yields, name="yield %", yaxis="y2", mode="lines+markers",
                       line=dict(color="#1565c0"), connectgaps=False,
                       hovertemplate="%{x|%H:00} yield %{y:.1f} %<extra></extra>")
    figure.update_layout(barmode="stack", title="parts per hour and yield", **LAYOUT,
                         yaxis=dict(title="parts"), xaxis=dict(type="date"),
                         yaxis2=dict(title="yield %", overlaying="y", side="right", range=[0, 101], showgrid=False,
                                     tickvals=[0, 20, 40, 60, 80, 100]))
    return figure


def score_figure(rows: Sequence[Dict[str, Any]], calibration_scores: Sequence[float] = (),
                 title: str = "scores of recent parts") -> go.Figure:
    """Histograms (share of parts) of the recent PASS and FAIL scores, the calibration good parts' scores when
    known, and the threshold in use as a dashed line."""
    figure = go.Figure()
    all_scores = [float(r["score"]) for r in rows] + [float(s) for s in calibration_scores]
    if not all_scores:
        figure.add_annotation(text="no decided parts yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        figure.update_layout(title=title, **LAYOUT)
        return figure
    low, high = min(all_scores), max(all_scores)
    thresholds = Counter(float(r["threshold"]) for r in rows if r.get("threshold") is not None)
    threshold: Optional[float] = thresholds.most_common(1)[0][0] if thresholds else None
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    bins = dict(start=low, end=high + 1e-9, size=max((high - low) / 40, 1e-9))
    if calibration_scores:
        figure.add_histogram(x=list(calibration_scores), name="good parts at calibration", histnorm="probability",
                             xbins=bins, marker_color="#90a4ae", opacity=0.6)
    for verdict in ("PASS", "FAIL"):
        scores = [float(r["score"]) for r in rows if r["verdict"] == verdict]
        if scores:
            figure.add_histogram(x=scores, name=f"{verdict} ({len(scores)})", histnorm="probability", xbins=bins,
                                 marker_color=VERDICT_COLOURS[verdict], opacity=0.6)
    if threshold is not None:
        figure.add_vline(x=threshold, line_dash="dash", line_color="black",
                         annotation_text=f"threshold {threshold:.4g}", annotation_position="top")
        if len(thresholds) > 1:
            title += f" ({len(thresholds)} thresholds in use; the most common shown)"
    figure.update_layout(barmode="overlay", title=title, xaxis_title="image score", yaxis_title="share of parts",
                         **LAYOUT)
    return figure


def model_options(model_ids: Sequence[str]) -> List[Dict[str, str]]:
    return [{"label": "all models", "value": ""}] + [{"label": m, "value": m} for m in model_ids]


__all__ = ["hourly_figure", "score_figure", "yield_of", "VERDICT_COLOURS", "model_options"]
