"""What a replay leaves behind: a per-window table, an HTML dashboard and a PNG plot.

One row per drift window says why the loop did what it did: what served the window and
how well (on labels that arrived later), the drift and quality signals with their
numbers, the policy's decision, the gate's verdict and the resulting event; beside it the
same window under the strategies the loop is compared with (never retraining, a monthly
calendar), so the plot shows where the loop wins and loses.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class WindowRow:
    start: str
    end: str
    rows: int
    version: str  # the version(s) that served the window, e.g. "1" or "1→2"
    family: str  # the model family that served it
    metric: str  # the spec's metric, e.g. "rmse"
    served: float | None  # that metric on the window's rows (labels known in hindsight)
    drifted_share: float | None
    signals: list[str] = field(default_factory=list)  # the rules that fired, with numbers
    decision: str = "-"  # "TRIGGER", "-", or why not
    gate: str = ""  # the gate's verdict and reasons, when a run answered a trigger
    event: str = ""  # e.g. "v2 promoted", "refused by the gate", "run failed: ..."
    estimated: float | None = None  # the label-free estimate at job time, if any
    report: str | None = None  # path or URL of the Evidently report
    others: dict[str, float] = field(default_factory=dict)  # other strategies, same window


def _num(x: float | None, width: int = 7, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(width)
    return f"{x:{width}.{digits}g}"


def table(rows: list[WindowRow]) -> str:
    others = sorted({k for r in rows for k in r.others})
    metric = rows[0].metric if rows else "metric"
    head = (
        f"{'window':23s} {'rows':>5s} {'ver':>5s} {'family':>13s} {metric:>7s} {'est':>7s} "
        + "".join(f"{k[:13]:>14s}" for k in others)
        + f" {'drift':>6s}  decision / gate / event"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        why = "; ".join([r.decision] + r.signals[:2] + ([r.gate[:80]] if r.gate else []))
        lines.append(
            f"{r.start[:10]} .. {r.end[:10]} {r.rows:5d} {r.version:>5s} {r.family[:13]:>13s} "
            f"{_num(r.served)} {_num(r.estimated)}"
            + "".join(f"{_num(r.others.get(k), 14)}" for k in others)
            + f" {_num(r.drifted_share, 6, 2)}  {why}{' -> ' + r.event if r.event else ''}"
        )
    return "\n".join(lines)


def plot(rows: list[WindowRow], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    metric = rows[0].metric if rows else ""
    fig, ax1 = plt.subplots(figsize=(11, 4.5))
    ax1.plot(x, [_nan(r.served) for r in rows], "o-", color="tab:red", label="driftloop")
    for name in sorted({k for r in rows for k in r.others}):
        ax1.plot(x, [_nan(r.others.get(name)) for r in rows], ".--", label=name, alpha=0.8)
    if any(r.estimated is not None for r in rows):
        ax1.plot(x, [_nan(r.estimated) for r in rows], "x:", color="tab:gray", label="estimated")
    ax1.set_ylabel(f"served {metric}")
    ax2 = ax1.twinx()
    ax2.bar(x, [r.drifted_share or 0 for r in rows], alpha=0.2, color="tab:blue")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("drifted-feature share")
    for i, r in enumerate(rows):
        if "promoted" in r.event:
            ax1.axvline(i + 0.5, color="tab:green", linestyle="--")
            ax1.annotate(
                r.event.split()[0],
                (i + 0.5, ax1.get_ylim()[1]),
                color="tab:green",
                ha="center",
                va="top",
                fontsize=8,
            )
    ax1.set_xticks(x, [r.start[5:10] for r in rows], rotation=60, fontsize=7)
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def dashboard(
    rows: list[WindowRow],
    path: Path,
    png: Path,
    title: str,
    notes: str,
    summary: list[tuple[str, str]] | None = None,
) -> Path:
    others = sorted({k for r in rows for k in r.others})

    def row(r: WindowRow) -> str:
        link = f'<a href="{html.escape(r.report)}">report</a>' if r.report else ""
        cells = [
            f"{r.start[:10]} .. {r.end[:10]}",
            str(r.rows),
            f"v{r.version}",
            html.escape(r.family),
            _num(r.served).strip(),
            _num(r.estimated).strip(),
            *(_num(r.others.get(k)).strip() for k in others),
            _num(r.drifted_share, 6, 2).strip(),
            "<br>".join(html.escape(s) for s in r.signals),
            html.escape(r.decision),
            html.escape(r.gate),
            html.escape(r.event),
            link,
        ]
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    metric = rows[0].metric if rows else "metric"
    heads = [
        "window",
        "rows",
        "served by",
        "family",
        f"served {metric}",
        f"estimated {metric}",
        *others,
        "drifted share",
        "signals",
        "decision",
        "gate",
        "event",
        "report",
    ]
    summary_html = ""
    if summary:
        summary_html = (
            "<table>"
            + "".join(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary
            )
            + "</table>"
        )
    trs = "\n".join(row(r) for r in rows)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{vertical-align:top}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd;font-size:13px}} th{{text-align:left}}</style>
</head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>{summary_html}
<img src="{png.name}" alt="served {metric} per window: driftloop and the strategies it is
compared with; drift share; promotions marked">
<table><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}</tr>
{trs}</table></body></html>""")
    return path
