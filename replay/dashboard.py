"""The loop demo's outputs: a per-window table, an HTML dashboard and a PNG plot."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WindowRow:
    start: str
    end: str
    rows: int
    version: str  # model version(s) that served the window, e.g. "1" or "1→2"
    served_rmse: float
    drifted_share: float | None
    decision: str  # "-", "TRIGGER", or why not
    event: str  # e.g. "v2 promoted" / "gate refused" / ""
    report: str | None  # path or URL of the Evidently report


def table(rows: list[WindowRow]) -> str:
    head = f"{'window':23s} {'rows':>5s} {'ver':>5s} {'RMSE':>7s} {'drift':>6s}  events"
    lines = [head, "-" * len(head)]
    for r in rows:
        drift = f"{r.drifted_share:6.2f}" if r.drifted_share is not None else "     -"
        lines.append(
            f"{r.start[:10]} .. {r.end[:10]} {r.rows:5d} {r.version:>5s} "
            f"{r.served_rmse:7.1f} {drift}  {r.decision}{' ' + r.event if r.event else ''}"
        )
    return "\n".join(lines)


def plot(rows: list[WindowRow], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    fig, ax1 = plt.subplots(figsize=(11, 4.5))
    ax1.plot(x, [r.served_rmse for r in rows], "o-", color="tab:red", label="served RMSE")
    ax1.set_ylabel("served RMSE")
    ax2 = ax1.twinx()
    ax2.bar(
        x, [r.drifted_share or 0 for r in rows], alpha=0.25, color="tab:blue", label="drifted share"
    )
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
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dashboard(rows: list[WindowRow], path: Path, png: Path, title: str, notes: str) -> Path:
    def row(r: WindowRow) -> str:
        drift = "" if r.drifted_share is None else f"{r.drifted_share:.2f}"
        link = f'<a href="{html.escape(r.report)}">Evidently report</a>' if r.report else ""
        cells = [
            f"{r.start[:10]} .. {r.end[:10]}",
            str(r.rows),
            f"v{r.version}",
            f"{r.served_rmse:.1f}",
            drift,
            html.escape(r.decision),
            html.escape(r.event),
            link,
        ]
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    trs = "\n".join(row(r) for r in rows)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:2px 10px;border-bottom:1px solid #ddd}} th{{text-align:left}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
<img src="{png.name}" alt="served error and drift share per window, retrains marked">
<table><tr><th>window</th><th>rows</th><th>served by</th><th>RMSE</th><th>drifted share</th>
<th>decision</th><th>event</th><th>report</th></tr>
{trs}</table></body></html>""")
    return path
