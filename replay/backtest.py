"""``driftloop backtest``: would driftloop have kept a model good on this history, and at
what cost, compared with what a user would do instead?

    driftloop backtest --spec data/bike_sharing.yaml --train-end 2012-01-01 --end 2013-01-01

For any dataset spec: a model is trained on ``[train_start, train_end)`` with the
pipeline's steps (in this process), then the rest of the history is replayed in windows,
each served by whatever model is in production when its rows arrive. The strategies,
each in its own store and process, side by side:

- ``driftloop``: each window's traffic is logged as the collector would, its labels arrive
  ``label_delay_days`` later, and after each window the real drift job
  (``driftloop.monitor.run_window``) decides with the policy; a trigger runs the pipeline's
  steps on the trailing ``retrain_days`` (candidates compete, the gate decides, the winner
  is refit and promoted);
- ``static``: the first model, never retrained;
- ``calendar_torch`` / ``calendar_lgbm``: every month, the family's default recipe trained
  on the trailing six months and always promoted (what a user would do with a schedule).

It prints a table per window and writes ``dashboard.html``, ``loop.png`` and
``backtest.json`` (every window, retrain and score) to ``--out``. Scores are per calendar
month over the rows served in it: the spec's metric, and ROC-AUC too for binary tasks.
Users run it on their own history to choose a policy before deploying one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from driftloop.data import TIME, load_window, parse_bound
from driftloop.errors import ConfigError, DataError
from driftloop.formats import VersionFiles, parse_schema
from driftloop.payloads import write_labels, write_log_frame
from driftloop.policy import DriftPolicy
from driftloop.registry import Registry, VersionRef
from driftloop.settings import Settings, load_settings
from driftloop.spec import LOWER_IS_BETTER, DatasetSpec, load_spec
from driftloop.store import Store, open_store
from driftloop.trigger import TriggerLog
from replay.dashboard import WindowRow, dashboard, plot, table

if TYPE_CHECKING:  # the training stack (torch, sklearn) loads when a backtest runs, not
    from driftloop.families import FittedModel  # when the command line is built

STRATEGIES = ("driftloop", "static", "calendar_torch", "calendar_lgbm")
CALENDAR_FAMILY = {"calendar_torch": "tabular-torch", "calendar_lgbm": "tabular-lgbm"}


def candidates(n: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """The loop's competing trials: the pipeline's own default for tabular data
    (gradient-boosted trees and the torch MLP)."""
    from driftloop.steps import default_trials

    return default_trials("tabular", n, seed)


class BacktestConfig(BaseModel):
    """One backtest; every default is what the loop does in production."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    spec_path: str
    train_start: str = ""  # "" = the first row
    train_end: str
    end: str = ""  # "" = the last row
    # Two weeks: ~336 hourly rows, above the policy's min_rows (300), yet short enough
    # that a drifting model is caught within a fortnight.
    window_days: float = Field(14.0, gt=0, le=366)
    # Labels (the truth for a served row) arrive this long after it was served.
    label_delay_days: float = Field(7.0, ge=0, le=366)
    retrain_days: int = Field(180, ge=1, le=3650)  # the trigger's training window
    calendar_train_months: int = Field(6, ge=1, le=120)
    policy: DriftPolicy = DriftPolicy()
    trials: list[dict[str, Any]] = Field(default_factory=candidates)
    margin: float = Field(0.0, ge=0, lt=1)
    report_rows: int = Field(2000, ge=0)  # rows of each window's Evidently report; 0: none
    strategies: list[str] = list(STRATEGIES)

    def spec(self) -> DatasetSpec:
        return load_spec(self.spec_path)


# -- serving offline ----------------------------------------------------------------------
class Production:
    """The production model of a store, reloaded when the alias moves."""

    def __init__(self, store: Store, model: str) -> None:
        self.registry, self.model = Registry(store), model
        self.cache: dict[int, FittedModel] = {}

    def current(self) -> tuple[int, FittedModel]:
        v = self.registry.alias(self.model, "production")
        if v is None:
            raise DataError(f"{self.model} has no production version to serve")
        if v not in self.cache:
            from driftloop.steps import load_version

            self.cache[v] = load_version(self.registry, VersionRef(self.model, v))
        return v, self.cache[v]

    def family(self, version: int) -> str:
        return self.registry.manifest(VersionRef(self.model, version)).family


def serve(rows: pd.DataFrame, model: FittedModel, spec: DatasetSpec) -> pd.DataFrame:
    """``prediction`` (value or P(positive)) and ``label`` for each row."""
    p = model.predict(rows)
    if spec.task == "regression":
        return pd.DataFrame({"prediction": p["value"], "label": None}, index=rows.index)
    return pd.DataFrame({"prediction": p["probability"], "label": p["label"]}, index=rows.index)


def score(rows: pd.DataFrame, served: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The spec's metric (and ROC-AUC for binary) of what was served on ``rows``."""
    from driftloop.metrics import classification_metrics, regression_metrics

    y = rows[spec.target].to_numpy()
    if spec.task == "regression":
        return regression_metrics(y.astype(float), served["prediction"].to_numpy(dtype=float))
    c = classification_metrics(
        y.astype(str),
        served["label"].to_numpy().astype(str),
        served["prediction"].to_numpy(dtype=float) if spec.task == "binary" else None,
        spec.positive_label,
    )
    return c


def also_reported(spec: DatasetSpec) -> list[str]:
    """Metrics reported beside the spec's: for a binary task both F1 (the decisions) and
    ROC-AUC (the ranking), whichever the spec names."""
    if spec.task != "binary":
        return []
    return [k for k in ("f1", "roc_auc") if k != spec.metric]


def monthly(rows: pd.DataFrame, served: pd.DataFrame, spec: DatasetSpec) -> dict[str, list]:
    keys = [spec.metric, *also_reported(spec)]
    out: dict[str, list] = {"months": [], **{k: [] for k in keys}}
    for m, idx in rows.groupby(rows[TIME].dt.to_period("M")).groups.items():
        s = score(rows.loc[idx], served.loc[idx], spec)
        out["months"].append(str(m))
        for k in keys:
            out[k].append(round(float(s[k]), 4))
    return out


# -- one strategy ------------------------------------------------------------------------
def replay(config: BacktestConfig, strategy: str, base: str, root: str) -> dict[str, Any]:
    """Replay the history with ``strategy`` in a copy of the initial store ``base``."""
    import torch

    torch.set_num_threads(1)  # strategies run side by side, one core each
    shutil.copytree(base, root)
    spec = config.spec()
    store = open_store(load_settings(store_uri=root))
    rows = load_window(spec, config.train_end, config.end or None)
    served = pd.DataFrame(index=rows.index, columns=["prediction", "label", "version"])
    production = Production(store, spec.name)
    t0 = time.perf_counter()
    events: dict[str, Any] = {}
    if strategy == "static":
        v, model = production.current()
        served.update(serve(rows, model, spec).assign(version=v))
    elif strategy in CALENDAR_FAMILY:
        events = _calendar(config, spec, store, rows, served, production, strategy)
    else:
        events = _loop(config, spec, store, rows, served, production)
    return {
        "scores": monthly(rows, served, spec),
        "served": served.assign(time=rows[TIME]).reset_index(drop=True).to_dict("list"),
        "seconds": round(time.perf_counter() - t0, 1),
        **events,
    }


def _serve_window(
    rows: pd.DataFrame,
    served: pd.DataFrame,
    production: Production,
    spec: DatasetSpec,
    lo: datetime,
    hi: datetime,
) -> tuple[int, pd.DataFrame]:
    part = rows[(rows[TIME] >= lo) & (rows[TIME] < hi)]
    v, model = production.current()
    if len(part):
        served.update(serve(part, model, spec).assign(version=v))
    return v, part


def _calendar(
    config: BacktestConfig,
    spec: DatasetSpec,
    store: Store,
    rows: pd.DataFrame,
    served: pd.DataFrame,
    production: Production,
    strategy: str,
) -> dict[str, Any]:
    from driftloop.steps import run_inprocess, sample_trials

    family = CALENDAR_FAMILY[strategy]
    trials = sample_trials(1, 0, family)  # the family's default recipe
    retrains = []
    first = rows[TIME].min()
    for m in pd.date_range(first.normalize().replace(day=1), rows[TIME].max(), freq="MS"):
        start = (m - pd.DateOffset(months=config.calendar_train_months)).strftime("%Y-%m-%d")
        ref, decision = run_inprocess(
            spec, store, start, m.strftime("%Y-%m-%d"), trials, obey_gate=False
        )
        assert ref is not None  # obey_gate=False always registers
        retrains.append({"at": m.strftime("%Y-%m-%d"), "version": ref.version})
        _serve_window(rows, served, production, spec, m, m + pd.DateOffset(months=1))
    return {"retrains": retrains}


def _loop(
    config: BacktestConfig,
    spec: DatasetSpec,
    store: Store,
    rows: pd.DataFrame,
    served: pd.DataFrame,
    production: Production,
) -> dict[str, Any]:
    from driftloop.monitor import run_window
    from monitoring.backends import InProcessBackend

    backend = InProcessBackend(store, spec, config.trials, margin=config.margin)
    window = timedelta(days=config.window_days)
    delay = timedelta(days=config.label_delay_days)
    start = rows[TIME].min().normalize().to_pydatetime()
    end = rows[TIME].max().to_pydatetime() + timedelta(microseconds=1)
    registry, windows = Registry(store), []
    label_time = rows[TIME] + delay
    t, delivered_to = start, start
    while t < end:
        w_end = min(t + window, end)
        # 1. Serve the window with the production model; log it as the collector would.
        v, part = _serve_window(rows, served, production, spec, t, w_end)
        if len(part):
            frame = part[[*spec.features, TIME]].join(served.loc[part.index, ["prediction"]])
            frame["prediction"] = frame["prediction"].astype(float)
            if spec.task != "regression":
                frame["label"] = served.loc[part.index, "label"].astype(str)
            frame["request_id"] = [f"r{i}" for i in part.index]
            ref = VersionRef(spec.name, v)
            schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
            write_log_frame(store, spec.name, v, "default", schema, frame)
        # 2. The labels whose time has come by the window's end arrive.
        due = rows[(label_time >= delivered_to) & (label_time < w_end)]
        if len(due):
            write_labels(
                store,
                spec.name,
                [
                    {"request_id": f"r{i}", "label": _label(y, spec), "time": lt.isoformat()}
                    for i, y, lt in zip(
                        due.index, due[spec.target], label_time[due.index], strict=True
                    )
                ],
                now=w_end.replace(tzinfo=UTC),
            )
        delivered_to = w_end
        # 3. The drift job on every full window; a trigger retrains, the gate decides.
        if w_end - t == window and len(part):
            record = run_window(
                store,
                spec.name,
                t,
                w_end,
                policy=config.policy,
                backend=backend,
                retrain_days=config.retrain_days,
                report_rows=config.report_rows,
            )
            trig = (
                TriggerLog(store, spec.name).get(record.trigger_id) if record.trigger_id else None
            )
            after = registry.alias(spec.name, "production")
            windows.append(
                {
                    "start": t.isoformat(),
                    "end": w_end.isoformat(),
                    "version": v,
                    "family": production.family(v),
                    "rows": record.rows,
                    "drifted_share": record.drifted_share,
                    "quality": record.quality,
                    "trigger": record.trigger,
                    "reasons": record.reasons,
                    "estimated": record.estimated,
                    "gate": backend.outcomes.get(trig.run_id, "") if trig else "",
                    "outcome": trig.outcome if trig else "",
                    "status": trig.status if trig else "",
                    "promoted": after if after != v else None,
                    "report": record.report_key if config.report_rows else None,
                }
            )
        t = w_end
    triggers = TriggerLog(store, spec.name).all()
    return {
        "windows": windows,
        "retrains": [
            {"at": x.window.end[:10], "status": x.status, "outcome": x.outcome} for x in triggers
        ],
        "promotions": [w["end"][:10] for w in windows if w["promoted"]],
    }


def _label(y: Any, spec: DatasetSpec) -> float | str:
    return float(y) if spec.task == "regression" else str(y)


# -- all strategies ----------------------------------------------------------------------
def _init(config: BacktestConfig, root: str) -> dict[str, Any]:
    import torch

    from driftloop.steps import run_inprocess

    torch.set_num_threads(1)
    spec = config.spec()
    store = open_store(load_settings(store_uri=root))
    ref, decision = run_inprocess(
        spec, store, config.train_start, config.train_end, config.trials, margin=config.margin
    )
    if ref is None:
        raise DataError(f"the first model failed the gate: {decision.summary}")
    return {"version": ref.version, "gate": decision.summary}


def run_backtest(config: BacktestConfig, workers: int = 2) -> dict[str, Any]:
    """Every strategy of ``config`` replayed; the raw results (``summarise`` reads them)."""
    spec = config.spec()
    _check(config, spec)
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="driftloop-backtest-") as tmp,
        ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool,
    ):
        base = str(Path(tmp) / "base")
        start = pool.submit(_init, config, base).result()
        futures = {
            s: pool.submit(replay, config, s, base, str(Path(tmp) / s)) for s in config.strategies
        }
        results = {s: f.result() for s, f in futures.items()}
    return {"start": start, "results": results, "seconds": round(time.perf_counter() - t0, 1)}


def _check(config: BacktestConfig, spec: DatasetSpec) -> None:
    """Refuse a backtest that cannot run, before anything trains."""
    unknown = [s for s in config.strategies if s not in STRATEGIES]
    if unknown or not config.strategies:
        raise ConfigError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    end = parse_bound(config.train_end, "--train-end")
    if config.end and parse_bound(config.end, "--end") <= end:
        raise ConfigError(f"--end {config.end} must come after --train-end {config.train_end}")
    train = load_window(spec, config.train_start or None, config.train_end)  # empty: DataError
    rest = load_window(spec, config.train_end, config.end or None)
    if rest[TIME].max() - rest[TIME].min() < timedelta(days=config.window_days):
        raise DataError(
            f"the replay [{config.train_end}, {config.end or 'end'}) spans less than one "
            f"{config.window_days:g}-day window: nothing to decide on"
        )
    if rest[spec.target].isna().all():
        raise DataError("the replayed rows carry no labels: quality cannot be measured")
    del train


def summarise(config: BacktestConfig, out: dict[str, Any]) -> dict[str, Any]:
    """The figures a user compares strategies by: the average monthly metric of each
    (F1 and ROC-AUC for binary), retrains and promotions, the loop vs calendar LightGBM."""
    spec = config.spec()
    res = out["results"]
    summary: dict[str, Any] = {"metric": spec.metric}
    for name, r in res.items():
        summary[name] = round(float(np.nanmean(r["scores"][spec.metric])), 4)
        for k in also_reported(spec):
            summary[f"{name}_{k}"] = round(float(np.nanmean(r["scores"][k])), 4)
    if "driftloop" in res and "calendar_lgbm" in res:
        summary["ratio_vs_lgbm"] = round(summary["driftloop"] / summary["calendar_lgbm"], 3)
    if "driftloop" in res:
        summary["retrains"] = len(res["driftloop"]["retrains"])
        summary["promotions"] = len(res["driftloop"]["promotions"])
    for name in CALENDAR_FAMILY:
        if name in res:
            summary["calendar_retrains"] = len(res[name]["retrains"])
    if "driftloop" in res:
        summary["estimate_within_share"] = estimate_within_share(config, out)
    return summary


# How close a label-free estimate must come to the quality realised once the labels are in
# (the loop issue's goal): 0.05 absolute for F1 / ROC-AUC / accuracy, 20 % of the RMSE/MAE.
ESTIMATE_TOLERANCE = {"absolute": 0.05, "relative": 0.20}


def estimate_within_share(config: BacktestConfig, out: dict[str, Any]) -> float | None:
    """The share of the loop's windows whose label-free estimate (made at job time, before
    most labels arrived) came within ``ESTIMATE_TOLERANCE`` of the quality realised on that
    window's served rows; None when no window had an estimate."""
    hits = []
    for r in window_rows(config, out):
        est, real = r.estimated, r.served
        if est is None or real is None or np.isnan(est) or np.isnan(real):
            continue
        lower = r.metric in LOWER_IS_BETTER
        limit = ESTIMATE_TOLERANCE["relative"] * real if lower else ESTIMATE_TOLERANCE["absolute"]
        hits.append(abs(est - real) <= limit)
    return round(sum(hits) / len(hits), 3) if hits else None


def window_rows(config: BacktestConfig, out: dict[str, Any]) -> list[WindowRow]:
    """The loop's windows as dashboard rows, with the other strategies on the same windows."""
    spec = config.spec()
    res = out["results"]
    loop = res.get("driftloop")
    if loop is None:
        return []
    frames = {k: pd.DataFrame(r["served"]) for k, r in res.items()}
    truth = load_window(spec, config.train_end, config.end or None).reset_index(drop=True)
    rows = []
    for w in loop["windows"]:
        lo, hi = pd.Timestamp(w["start"]), pd.Timestamp(w["end"])
        mask = (truth[TIME] >= lo) & (truth[TIME] < hi)
        metric = {
            k: float(score(truth[mask], f[mask], spec)[spec.metric]) for k, f in frames.items()
        }
        said = (w["outcome"] or "").partition(": ")[0]  # the reasons are in ``gate``
        restored = said.startswith("restored")
        event = (
            f"v{w['promoted']} {'restored' if restored else 'promoted'}" if w["promoted"] else said
        )
        rows.append(
            WindowRow(
                start=w["start"],
                end=w["end"],
                rows=w["rows"],
                version=str(w["version"]),
                family=w["family"],
                metric=spec.metric,
                served=metric["driftloop"],
                drifted_share=w["drifted_share"],
                signals=[r for r in w["reasons"] if r[0].isalpha()][:3],
                decision="TRIGGER" if w["trigger"] else "-",
                estimated=(w.get("estimated") or {}).get(spec.metric),
                gate=w["gate"],
                event=event,
                others={k: v for k, v in metric.items() if k != "driftloop"},
            )
        )
    return rows


def write_outputs(config: BacktestConfig, out: dict[str, Any], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rows = window_rows(config, out)
    summary = summarise(config, out)
    data = {"config": config.model_dump(mode="json"), "summary": summary, **out}
    paths = {"json": directory / "backtest.json"}
    paths["json"].write_text(json.dumps(data, indent=1, default=str))
    if rows:
        spec = config.spec()
        paths["plot"] = plot(rows, directory / "loop.png", f"driftloop backtest: {spec.name}")
        notes = (
            f"Trained on [{config.train_start or 'start'}, {config.train_end}); replayed in "
            f"{config.window_days:g}-day windows, labels {config.label_delay_days:g} days late; "
            f"retraining on the trailing {config.retrain_days} days."
        )
        paths["dashboard"] = dashboard(
            rows,
            directory / "dashboard.html",
            paths["plot"],
            f"driftloop backtest: {spec.name}",
            notes,
            [(k, str(v)) for k, v in summary.items()],
        )
    return paths


# -- the command -------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = BacktestConfig.model_fields
    p.add_argument("--spec", required=True, help="dataset spec YAML")
    p.add_argument(
        "--train-start", default="", help="first model's window start (default: first row)"
    )
    p.add_argument(
        "--train-end", required=True, help="first model's window end; the replay starts here"
    )
    p.add_argument("--end", default="", help="replay end (default: the last row)")
    p.add_argument(
        "--window-days",
        type=float,
        default=d["window_days"].default,
        help="drift-job window (default: %(default)s days)",
    )
    p.add_argument(
        "--label-delay-days",
        type=float,
        default=d["label_delay_days"].default,
        help="how long after serving a row its label arrives (default: %(default)s)",
    )
    p.add_argument(
        "--retrain-days",
        type=int,
        default=d["retrain_days"].default,
        help="a triggered run trains on [window end - days, window end) (default: %(default)s)",
    )
    p.add_argument("--policy", help="drift policy YAML (default: driftloop.policy defaults)")
    p.add_argument("--margin", type=float, default=0.0, help="the gate's margin vs the champion")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument(
        "--report-rows",
        type=int,
        default=d["report_rows"].default,
        help="rows of each window's Evidently HTML report, 0: none (default: %(default)s)",
    )
    p.add_argument("--workers", type=int, default=2, help="strategies replayed at once")
    p.add_argument("--out", default="backtest-output", help="where the dashboard and JSON go")


def config_from(args: argparse.Namespace) -> BacktestConfig:
    from driftloop.config import validated
    from driftloop.policy import load_policy

    raw = {
        "spec_path": args.spec,
        "train_start": args.train_start,
        "train_end": args.train_end,
        "end": args.end,
        "window_days": args.window_days,
        "label_delay_days": args.label_delay_days,
        "retrain_days": args.retrain_days,
        "margin": args.margin,
        "strategies": args.strategies,
        "report_rows": args.report_rows,
    }
    if args.policy:
        raw["policy"] = load_policy(args.policy)
    return validated(BacktestConfig, raw, "backtest")


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = config_from(args)
    if not 1 <= args.workers <= 8:
        raise ConfigError(f"--workers must be in 1..8, not {args.workers}")
    out = run_backtest(config, args.workers)
    paths = write_outputs(config, out, Path(args.out))
    print(table(window_rows(config, out)))
    print()
    for k, v in summarise(config, out).items():
        print(f"{k:>18s}: {v}")
    print(f"\n{', '.join(f'{k}: {p}' for k, p in paths.items())}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay a dataset's history through the loop; compare with never retraining "
        "and a monthly calendar",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    from driftloop import entrypoint

    return entrypoint.main(
        "python -m replay.backtest", __doc__.split("\n")[0], add_arguments, run, argv
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
