"""The HTML report page of ``uadnet_plot_overlays``: the evaluation summary as tables, then one row per case with
its figure, ordered by case score."""

from __future__ import annotations

import html
import math
import os
from typing import Any
from urllib.parse import quote

from uadnet.utilities.file_io import atomic_path

PER_CASE_METRICS = {"ap": "AP", "auroc": "AUROC", "dice_at_threshold": "Dice@thr", "best_dice": "best Dice"}


def fmt_value(value: Any) -> str:
    """A table cell or title value: 4 significant digits, yes/no for bools, n/a for None or non-finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _scalar_cell(value: Any) -> str:
    return html.escape(fmt_value(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def dict_table(d: dict[str, Any]) -> str:
    """A small HTML table of a dict: scalars as key/value rows, a dict of dicts of scalars as a matrix, deeper
    dicts recursively. Lists are left out."""
    if d and all(isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()) for v in d.values()):
        columns = list(dict.fromkeys(k for v in d.values() for k in v))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th>"
                       + "".join(f"<td>{_scalar_cell(v.get(c))}</td>" for c in columns) + "</tr>"
                       for k, v in d.items())
        return f"<table class='metrics'><tr><th></th>{head}</tr>{rows}</table>"
    rows = []
    for k, v in d.items():
        if _is_scalar(v):
            rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{_scalar_cell(v)}</td></tr>")
        elif isinstance(v, dict) and v:
            rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{dict_table(v)}</td></tr>")
    return f"<table class='metrics'>{''.join(rows)}</table>" if rows else ""


def summary_html(summary: Any) -> str:
    """Sections for a ``summary.json``: its top-level numbers, then ``pooled`` / ``voxel`` first, then every
    other dict (``per_case_mean``, ``case_level``, ...), each as a table."""
    if not isinstance(summary, dict):
        return f"<p>summary: {html.escape(fmt_value(summary))}</p>"
    parts = []
    top = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if top:
        parts.append(dict_table(top))
    keys = [k for k in ("pooled", "voxel") if k in summary] + [k for k in summary if k not in ("pooled", "voxel")]
    for k in keys:
        v = summary[k]
        if isinstance(v, dict):
            table = dict_table(v)
            if table:
                parts.append(f"<h3>{html.escape(str(k))}</h3>{table}")
    notes = summary.get("notes")
    if isinstance(notes, list) and notes:
        parts.append("<h3>notes</h3><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


_STYLE = """body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin:0.3em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}th{background:#f4f4f4}
td.case{text-align:left}table.cases img{max-width:900px}"""


def report_html(rows: list[dict[str, Any]], title: str, summary: Any = None) -> str:
    """The report page: ``summary`` (pooled metrics) on top, then one table row per case with its PNG.

    ``rows`` hold ``case``, ``png`` (path relative to the page), ``score``, ``flagged`` and metric keys; they are
    sorted by score, highest first (cases without a score last, by name).
    """
    ordered = sorted(rows, key=lambda r: (r.get("score") is None, -(r.get("score") or 0.0), r["case"]))
    metric_keys = [k for k in ("anomalous", *PER_CASE_METRICS) if any(k in r for r in rows)]
    names = {"anomalous": "anomalous (label)", **PER_CASE_METRICS}
    head = "".join(f"<th>{html.escape(h)}</th>"
                   for h in ["#", "case", "score", "flagged", *(names[k] for k in metric_keys), "figure"])
    body = []
    for i, r in enumerate(ordered, start=1):
        href = html.escape(quote(r["png"]))
        cells = [str(i), html.escape(r["case"]), _scalar_cell(r.get("score")), _scalar_cell(r.get("flagged")),
                 *(_scalar_cell(r.get(k)) for k in metric_keys)]
        tds = "".join(f"<td class='case'>{c}</td>" if j == 1 else f"<td>{c}</td>" for j, c in enumerate(cells))
        body.append(f"<tr id='{href}'>{tds}<td><a href='{href}'><img src='{href}' loading='lazy' "
                    f"alt='{html.escape(r['case'])}'></a></td></tr>")
    summary_part = f"<h2>Summary</h2>\n{summary_html(summary)}" if summary is not None else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{summary_part}\n"
            f"<h2>Cases ({len(rows)}), by score</h2>\n<table class='cases'><tr>{head}</tr>\n"
            + "\n".join(body) + "\n</table></body></html>\n")


def write_text(text: str, path: str | os.PathLike, suffix: str = ".html") -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path, suffix) as tmp:
        tmp.write_text(text, encoding="utf-8")
