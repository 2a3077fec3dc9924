"""The model-family interface: what every part of driftloop needs of a kind of model.

    part                   calls
    pipeline: train        family.sample_trials / parse_params / train -> TrainResult
    pipeline: refit        family.refit: the selected recipe on the whole window
    pipeline: evaluate     model.predict on the test window (driftloop.metrics.scores)
    pipeline: register     model.save, model.input_schema, family.reference
    gate                   family.load(champion files).predict on the same window
    predictor              family.load(version dir), model.input_schema's contract,
                           predict, or predict_logged when it logs payloads
    drift job              family.drift (per window), family.report (Evidently HTML)

``FittedModel.predict`` is the one prediction path: pipeline evaluation, the gate, the
predictor, the drift reference and batch scoring all call it on decoded inputs (a
DataFrame, or a mapping of column name to values), so served predictions equal offline
ones. Its output is a dict of numpy arrays keyed by what the task predicts:

    regression   {"value"}
    binary       {"probability" of the positive class, "label"}
    multiclass   {"probabilities" [n, k], "probability" of the chosen class, "label"}

``FittedModel.predict_logged`` is the payload-log hook: the prediction plus the log columns
that stand for the inputs (``schema.names``), or None to log the request as it was sent
(tabular models: their features are the log columns). An image model logs its embedding
and a few image statistics instead of the pixels.

Saving writes exactly ``family.files`` into a directory, in safe formats (safetensors,
JSON, a library's native text format; never pickle); the registry checksums them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from driftloop.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.data import Splits
    from driftloop.drift import DriftResult, Source
    from driftloop.formats import InputSchema
    from driftloop.preprocess import Columns
    from driftloop.spec import DatasetSpec

Prediction = dict[str, np.ndarray]


class FittedModel(ABC):
    """A trained model of one family: predicts, saves itself, states its input contract."""

    family: ClassVar[str]

    @property
    @abstractmethod
    def inputs(self) -> list[str]:
        """The names of the inputs the model reads, in the order its schema lists them."""

    @abstractmethod
    def predict(self, inputs: Columns) -> Prediction:
        """Predictions for rows of raw inputs (see the module docstring for the keys)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write ``family.files`` into ``directory``."""

    @abstractmethod
    def input_schema(self, spec: DatasetSpec) -> InputSchema:
        """The input contract the predictor enforces and V2 metadata advertises."""

    def predict_logged(self, inputs: Columns) -> tuple[Prediction, dict[str, np.ndarray] | None]:
        """``predict``, plus what the payload log keeps for these inputs: one array per log
        column (``input_schema(...).names``), or None to log the request as it was sent
        (the default: a tabular request's features are its log columns)."""
        return self.predict(inputs), None


@dataclass
class TrainResult:
    model: FittedModel
    validation: dict[str, float]  # the spec's task metrics on the validation split
    epochs: int | None  # None for families that do not train in epochs
    params: dict[str, Any] = field(default_factory=dict)  # the full, parsed parameters


class ModelFamily(ABC):
    """One kind of model. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # e.g. "tabular-torch"; the module is families/tabular_torch.py
    tasks: ClassVar[frozenset[str]]  # spec tasks it can learn
    kinds: ClassVar[frozenset[str]] = frozenset({"tabular"})  # data kinds (spec `kind`) it learns
    files: ClassVar[tuple[str, ...]]  # what FittedModel.save writes
    # The declared search space: random search draws each listed parameter from its list;
    # unlisted parameters keep their defaults.
    search_space: ClassVar[dict[str, list[Any]]] = {}

    # -- training -----------------------------------------------------------------------
    @abstractmethod
    def default_params(self) -> dict[str, Any]:
        """A sound single trial."""

    def parse_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown names are a ConfigError. Values that
        crossed KFP arrive as floats (protobuf Struct): ints are restored by the default's
        type."""
        defaults = self.default_params()
        if unknown := sorted(set(params) - set(defaults)):
            raise ConfigError(
                f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(defaults)}"
            )
        out = dict(defaults)
        for k, v in params.items():
            kind = type(defaults[k])
            ok = isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            if kind is bool:
                ok = isinstance(v, bool) or v in (0, 1)
            elif kind is int:
                ok = ok and float(v).is_integer()
            elif kind is not float:
                ok = True
            if not ok:
                raise ConfigError(f"{self.name}: parameter {k}={v!r} is not a {kind.__name__}")
            out[k] = kind(v) if kind in (int, float, bool) else v
        return out

    def sample_trials(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` parameter sets; the first is always the defaults (a known-good anchor)."""
        rng = np.random.default_rng(seed)
        trials = [{**self.default_params(), **self._seeded(seed)}]
        while len(trials) < n:
            drawn = {k: v[int(rng.integers(len(v)))] for k, v in self.search_space.items()}
            trials.append({**self.default_params(), **drawn, **self._seeded(seed + len(trials))})
        return trials[:n]

    def _seeded(self, seed: int) -> dict[str, Any]:
        return {"seed": seed} if "seed" in self.default_params() else {}

    def check_task(self, spec: DatasetSpec) -> None:
        if spec.kind not in self.kinds:
            raise ConfigError(
                f"model family {self.name} cannot learn {spec.kind} data "
                f"(it learns {sorted(self.kinds)}); pick a family for kind {spec.kind}"
            )
        if spec.task not in self.tasks:
            raise ConfigError(
                f"model family {self.name} cannot learn a {spec.task} task "
                f"(it learns {sorted(self.tasks)})"
            )

    @abstractmethod
    def train(self, splits: Splits, spec: DatasetSpec, params: dict[str, Any]) -> TrainResult:
        """Fit on ``splits.train``, select on ``splits.validation`` (never ``test``)."""

    @abstractmethod
    def refit(
        self,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> FittedModel:
        """The selected model's recipe trained again on ``data`` (the whole window: train,
        validation and test) for the ``epochs`` selection found, with no early stopping;
        what selection tuned on validation (a decision threshold) is kept. The model a
        version serves is this refit: on drifting data the most recent rows, held out for
        selection and the gate, are the most informative ones."""

    # -- warm starts (optional) -----------------------------------------------------------
    def fine_tune(
        self, start: FittedModel, splits: Splits, spec: DatasetSpec, params: dict[str, Any]
    ) -> TrainResult:
        """Like ``train``, from ``start``'s weights (the production version) rather than
        from scratch: a warm-started challenger. Families that cannot, refuse."""
        raise ConfigError(f"model family {self.name} cannot warm-start from a version")

    def refit_from(
        self,
        start: FittedModel,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> FittedModel:
        """``refit`` for a fine-tuned ``selected``: from ``start`` again, on ``data``."""
        raise ConfigError(f"model family {self.name} cannot warm-start from a version")

    @abstractmethod
    def load(self, directory: Path) -> FittedModel:
        """The model ``FittedModel.save`` wrote into ``directory``."""

    # -- monitoring -------------------------------------------------------------------------
    @abstractmethod
    def reference(
        self, model: FittedModel, train: pd.DataFrame, spec: DatasetSpec, schema: InputSchema
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """At registration: the drift reference sample (training rows with the model's
        predictions) and its precomputed statistics."""

    @abstractmethod
    def drift(self, stats: dict[str, Any], window: Source, schema: InputSchema) -> DriftResult:
        """Per window: drift of the logged inputs and predictions against ``stats``."""

    @abstractmethod
    def report(
        self,
        reference: pd.DataFrame,
        window: Source,
        schema: InputSchema,
        html_path: Path,
        sample_rows: int,
    ) -> dict[str, Any]:
        """Per window: the Evidently report (HTML) and quality on labelled rows."""
