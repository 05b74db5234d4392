"""Metric tables in Markdown: the one formatter for reports, ablations, the demo and benchmarks."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from .metrics import METRIC_KEYS


def format_metric_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS,
                        first_column: str = "method") -> str:
    """Markdown table: one row per dict with a ``name`` (or ``method``) and the metric keys (NaN: n/a)."""
    headers = {"i_auroc": "I-AUROC", "p_auroc": "P-AUROC", "aupro_30": "AUPRO@30%", "aupro_1": "AUPRO@1%",
               "n_images": "images"}
    cols = [first_column] + [headers.get(k, k) for k in keys]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * len(keys)) + "|"]
    for row in rows:
        cells = [str(row.get("name", row.get("method", "")))]
        for k in keys:
            v = row.get(k)
            if isinstance(v, (float, np.floating)):
                cells.append("n/a" if not math.isfinite(float(v)) else f"{float(v):.3f}")
            else:
                cells.append("n/a" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_metric_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """Print (and return) :func:`format_metric_table`."""
    table = format_metric_table(rows, keys)
    print(table)
    return table


def report_rows(report: Mapping[str, Any], name: str = "mentor3ad") -> List[Dict[str, Any]]:
    """Table rows of a report: the model, then the naive baseline when present."""
    rows = [{"name": name, **report["metrics"]}]
    if "naive" in report:
        rows.append({"name": "naive baseline", **report["naive"]})
    return rows
