"""The promotion gate: does the challenger serve the recent past better than the champion?

On the same test window (the most recent labelled slice of the training window):

1. the **floor**: the challenger must beat the data kind's floor baseline (``dumb``, the
   training mean or the class prior; ``popular`` for a recommender) -- a model that cannot
   is broken, whatever the champion does;
2. the **champion**: when a production version exists, the challenger must beat it by
   ``margin`` (relative: 0.01 means 1 % better in the spec's metric).

References (the gradient-boosting baseline) are reported beside the verdict, never
required: the challenger is already the best of the candidates that competed by
validation, so refusing it because a reference is better would keep a worse champion
serving. The verdict's ``reasons`` say, with numbers, why it passed or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftloop.metrics import better

FLOOR = "dumb"  # the baseline no served model may fall below, unless the data kind says


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = ""
    challenger: float | None = None
    champion: float | None = None  # None: no production version
    floor: float | None = None

    @property
    def summary(self) -> str:
        return ("PASS: " if self.passed else "FAIL: ") + "; ".join(self.reasons)


def decide(
    metric: str,
    challenger: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    margin: float,
    floor_name: str = FLOOR,
) -> GateDecision:
    score = challenger[metric]
    reasons, passed = [], True
    floor = baselines.get(floor_name, {}).get(metric)
    if floor is not None:
        ok = better(metric, score, floor)
        passed &= ok
        reasons.append(
            f"{metric} {score:.4g} {'beats' if ok else 'does not beat'} the floor, the "
            f"{floor_name} baseline {floor:.4g}"
        )
    if champion is not None:
        ok = better(metric, score, champion[metric], margin)
        passed &= ok
        reasons.append(
            f"{metric} {score:.4g} {'beats' if ok else 'does not beat'} champion "
            f"v{champion.get('version', '?')} {champion[metric]:.4g} by margin {margin:.1%}"
        )
    else:
        reasons.append("no champion in production")
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
    )
