"""The promotion gate: does the challenger serve the recent past better than the champion?

On the same test window (the most recent labelled slice of the training window):

1. the **floor**: the challenger must beat the data kind's floor baseline (``dumb``, the
   training mean or the class prior; ``popular`` for a recommender) -- a model that cannot
   is broken, whatever the champion does;
2. the **champion**: when a production version exists, the challenger must beat it by
   ``margin`` (relative: 0.01 means 1 % better in the spec's metric);
3. **earlier versions** compete too: an earlier registered version that clears the same
   two bars and scores better than the challenger is restored instead (``restore``), so a
   better old model is brought back rather than a worse new one promoted. Only versions
   trained before the test window are eligible (``steps.earlier_scores``): one trained on
   these rows would be judged on its own training data.

References (the gradient-boosting baseline) are reported beside the verdict, never
required: the challenger is already the best of the candidates that competed by
validation, so refusing it because a reference is better would keep a worse champion
serving. The verdict's ``reasons`` say, with numbers, why it passed or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from driftloop.formats import GateRecord, GateVerdict, gate_key, gates_prefix
from driftloop.metrics import better
from driftloop.registry import Registry
from driftloop.store import Store

FLOOR = "dumb"  # the baseline no served model may fall below, unless the data kind says


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = ""
    challenger: float | None = None
    champion: float | None = None  # None: no production version
    floor: float | None = None
    restore: int | None = None  # an earlier version that beat champion and challenger
    earlier: dict[int, float] = field(default_factory=dict)  # version -> score

    @property
    def verdict(self) -> GateVerdict:
        """``promote`` the challenger, ``restore`` an earlier version, or ``refuse``."""
        return "promote" if self.passed else "restore" if self.restore else "refuse"

    @property
    def summary(self) -> str:
        head = {"promote": "PASS: ", "restore": f"RESTORE v{self.restore}: ", "refuse": "FAIL: "}
        return head[self.verdict] + "; ".join(self.reasons)


def decide(
    metric: str,
    challenger: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    margin: float,
    floor_name: str = FLOOR,
    earlier: dict[int, float] | None = None,
    judged: dict[str, float] | None = None,
    note: str = "",
) -> GateDecision:
    """``earlier``: scores of earlier registered versions; ``judged``: the challenger's
    metrics on the rows the champion and earlier versions were scored on, when that is
    not the whole test window (``note`` says which: ``steps.unseen_by_champion``)."""
    score, earlier = challenger[metric], dict(earlier or {})
    versus = (judged or challenger)[metric]  # the challenger's score beside the champion's
    reasons, passed = [], True
    floor = baselines.get(floor_name, {}).get(metric)
    if floor is not None:
        ok = better(metric, score, floor)
        passed &= ok
        reasons.append(
            f"{metric} {score:.4g} {'beats' if ok else 'does not beat'} the floor, the "
            f"{floor_name} baseline {floor:.4g}"
        )
    if note:
        reasons.append(note)
    if champion is not None:
        ok = better(metric, versus, champion[metric], margin)
        passed &= ok
        reasons.append(
            f"{metric} {versus:.4g} {'beats' if ok else 'does not beat'} champion "
            f"v{champion.get('version', '?')} {champion[metric]:.4g} by margin {margin:.1%}"
        )
    else:
        reasons.append("no champion in production")
    restore = _best_earlier(metric, earlier, champion, floor, margin)
    if restore is not None and (not passed or better(metric, earlier[restore], versus)):
        reasons.append(
            f"earlier v{restore} {earlier[restore]:.4g} on the same window clears the floor, "
            f"beats the champion by the margin and beats the challenger: restore v{restore}"
        )
        passed = False
    else:
        restore = None
    if earlier:
        scored = ", ".join(f"v{v} {s:.4g}" for v, s in sorted(earlier.items()))
        reasons.append(f"earlier versions on the same window: {scored}")
    for name, m in sorted(baselines.items()):
        if name != floor_name and metric in m:
            reasons.append(f"for reference, {name} baseline {m[metric]:.4g}")
    return GateDecision(
        bool(passed),
        reasons,
        metric,
        float(score),
        None if champion is None else float(champion[metric]),
        None if floor is None else float(floor),
        restore,
        earlier,
    )


def _best_earlier(
    metric: str,
    earlier: dict[int, float],
    champion: dict[str, float] | None,
    floor: float | None,
    margin: float,
) -> int | None:
    """The best earlier version that clears the floor and beats the champion by the margin
    (only with a champion: restoring is replacing one)."""
    if champion is None:
        return None
    best: int | None = None
    for version, s in sorted(earlier.items()):
        if version == champion.get("version") or s != s:  # the champion itself; NaN
            continue
        if floor is not None and not better(metric, s, floor):
            continue
        if not better(metric, s, champion[metric], margin):
            continue
        if best is None or better(metric, s, earlier[best]):
            best = version
    return best


def record(
    store: Store,
    model: str,
    decision: GateDecision,
    family: str,
    baselines: dict[str, dict[str, float]],
    champion: dict | None,
    run_id: str,
    trigger_id: str = "",
) -> str:
    """Keep the decision in the store (whatever the verdict); its key."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    rec = GateRecord(
        model=model,
        run_id=run_id,
        trigger_id=trigger_id,
        created=created,
        verdict=decision.verdict,
        metric=decision.metric,
        challenger=decision.challenger if decision.challenger is not None else float("nan"),
        family=family,
        champion=decision.champion,
        champion_version=None if champion is None else champion.get("version"),
        floor=decision.floor,
        restore=decision.restore,
        earlier={str(v): s for v, s in decision.earlier.items()},
        baselines=baselines,
        reasons=decision.reasons,
    )
    key = gate_key(model, created, run_id)
    store.put(key, rec.dump())
    return key


def restore(store: Store, model: str, version: int | None, why: str) -> int | None:
    """Serve the earlier version the gate chose again (the production alias); None if the
    gate chose none."""
    if not version:
        return None
    Registry(store).promote(model, version, reason=why[:500])
    return version


def gate_records(store: Store, model: str, trigger_id: str | None = None) -> list[GateRecord]:
    """The model's gate records, oldest first; only ``trigger_id``'s when given."""
    out = []
    for key in sorted(store.list(gates_prefix(model))):
        if key.endswith(".json"):
            rec: GateRecord = GateRecord.parse(store.get(key), f"{store.uri}/{key}")
            if trigger_id is None or rec.trigger_id == trigger_id:
                out.append(rec)
    return out
