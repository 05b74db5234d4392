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


def rate_text(count: int, parts: int) -> str:
    """A count of parts as text: 3/40 (7.5 %); n/a without parts."""
    return f"{count}/{parts} ({100.0 * count / parts:.1f} %)" if parts else "n/a"


def format_rate_table(rates: Mapping[str, Any]) -> str:
    """Markdown table of :func:`mentor3ad.eval.report.decision_rates`: per part type its parts, PASS, FAIL
    and ERROR counts and its rate (false-reject rate for good parts, escape rate for each defect type),
    then all defective parts together."""
    lines = ["| part type | parts | PASS | FAIL | ERROR | rate |", "|---|---:|---:|---:|---:|---|"]
    for name, entry in rates["per_type"].items():
        rate = (f"false-reject {rate_text(entry['failed'], entry['parts'])}" if name == "good"
                else f"escape {rate_text(entry['passed'], entry['parts'])}")
        lines.append(f"| {name} | {entry['parts']} | {entry['passed']} | {entry['failed']} | {entry['errors']} | {rate} |")
    defective = [e for n, e in rates["per_type"].items() if n != "good"]
    if len(defective) > 1:
        lines.append(f"| all defective | {rates['defective_parts']} | {rates['escapes']} | "
                     f"{sum(e['failed'] for e in defective)} | {sum(e['errors'] for e in defective)} | "
                     f"escape {rate_text(rates['escapes'], rates['defective_parts'])} |")
    return "\n".join(lines)


def format_threshold_table(rows: Sequence[Mapping[str, Any]], first_column: str = "variant") -> str:
    """Markdown table of verdicts at each row's threshold: rows with ``name``, ``threshold``, ``rates``
    (:func:`~mentor3ad.eval.report.decision_rates`) and optionally ``validation_false_reject_rate``."""
    lines = [f"| {first_column} | threshold | val. false-reject | escape rate | false-reject rate | errors | "
             "escapes per defect |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        rates = row["rates"]
        per_defect = ", ".join(f"{n} {e['passed']}/{e['parts']}" for n, e in rates["per_type"].items() if n != "good")
        validation = row.get("validation_false_reject_rate")
        validation = "n/a" if validation is None or not math.isfinite(validation) else f"{100.0 * validation:.1f} %"
        threshold = row.get("threshold")
        threshold = f"{float(threshold):.4g}" if isinstance(threshold, (int, float, np.number)) else "n/a"
        lines.append(f"| {row['name']} | {threshold} | {validation} | "
                     f"{rate_text(rates['escapes'], rates['defective_parts'])} | "
                     f"{rate_text(rates['false_rejects'], rates['good_parts'])} | {rates['errors']} | {per_defect} |")
    return "\n".join(lines)
