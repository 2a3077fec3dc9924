"""The promotion gate: a challenger must earn its place.

It passes when, on the same test window, it beats both baselines (the dumb model and the
gradient-boosting reference) and, when a production model exists, the champion by at
least ``margin`` (relative: 0.01 means 1 % better in the spec's metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftloop.metrics import better


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return ("PASS: " if self.passed else "FAIL: ") + "; ".join(self.reasons)


def decide(
    metric: str,
    challenger: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    margin: float,
) -> GateDecision:
    score = challenger[metric]
    reasons, passed = [], True
    for name, m in sorted(baselines.items()):
        ok = better(metric, score, m[metric])
        passed &= ok
        reasons.append(
            f"{metric} {score:.4g} {'beats' if ok else 'does not beat'} "
            f"{name} baseline {m[metric]:.4g}"
        )
    if champion is not None:
        ok = better(metric, score, champion[metric], margin)
        passed &= ok
        reasons.append(
            f"{metric} {score:.4g} {'beats' if ok else 'does not beat'} champion "
            f"{champion[metric]:.4g} by margin {margin:.1%}"
        )
    else:
        reasons.append("no champion in production")
    return GateDecision(bool(passed), reasons)
