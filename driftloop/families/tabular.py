"""What every tabular family shares: a fitted ``Preprocessor`` in front of the model, the
tabular input schema, and column-by-column drift (``driftloop.drift``).

A tabular family subclasses ``TabularFamily`` and its fitted model ``TabularModel``,
implementing training, ``raw_predict`` and the files; inputs, schema, reference and drift
come from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from driftloop.families.base import FittedModel, ModelFamily, Prediction
from driftloop.formats import FeatureSchema, TabularSchema

if TYPE_CHECKING:
    from driftloop.drift import DriftResult, Source
    from driftloop.preprocess import Columns, Preprocessor
    from driftloop.spec import DatasetSpec

REFERENCE_ROWS = 20_000  # drift reference sample; enough for stable per-column statistics


class TabularModel(FittedModel):
    """A preprocessor (fitted on the training split) and a model over its output."""

    pre: Preprocessor

    @property
    def inputs(self) -> list[str]:
        return [*self.pre.numeric, *self.pre.categories]

    def input_schema(self, spec: DatasetSpec) -> TabularSchema:
        feats = [FeatureSchema(name=c, kind="numeric", datatype="FP64") for c in self.pre.numeric]
        feats += [
            FeatureSchema(name=c, kind="categorical", datatype="BYTES", categories=cats)
            for c, cats in self.pre.categories.items()
        ]
        return TabularSchema(
            model=spec.name,
            task=spec.task,
            target=spec.target,
            features=feats,
            unknown_category=spec.unknown_category,
            classes=self.pre.classes,
            positive_label=spec.positive_label,
            threshold=self.pre.threshold,
        )

    def tune_threshold(self, validation: pd.DataFrame, spec: DatasetSpec) -> None:
        """Binary: the decision threshold on P(positive) that maximises the spec's metric
        on validation (F1 for threshold-free metrics)."""
        from driftloop.metrics import tune_threshold

        p = self.predict(validation)["probability"]
        y_pos = (validation[spec.target].astype(str) == spec.positive_label).to_numpy()
        self.pre.threshold = tune_threshold(y_pos.astype(int), p, spec.metric)

    def labelled(self, proba: np.ndarray) -> Prediction:
        """Probabilities -> the task's prediction dict. Binary: P(positive) [n];
        multiclass: [n, k] in ``pre.classes`` order."""
        classes = np.asarray(self.pre.classes, dtype=object)
        if self.pre.task == "binary":
            label = classes[(proba >= self.pre.threshold).astype(int)]
            return {"probability": proba, "label": label}
        k = proba.argmax(axis=1)
        return {
            "probabilities": proba,
            "probability": proba[np.arange(len(k)), k],
            "label": classes[k],
        }


class TabularFamily(ModelFamily):
    tasks: ClassVar[frozenset[str]] = frozenset({"regression", "binary", "multiclass"})

    def reference(
        self, model: FittedModel, train: pd.DataFrame, spec: DatasetSpec, schema: Any
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        from driftloop.data import TIME
        from driftloop.drift import reference_statistics

        sample = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=0)
        sample = sample.sort_values(TIME).reset_index(drop=True)
        pred = model.predict(sample)
        sample["prediction"] = pred["value"] if spec.task == "regression" else pred["probability"]
        return sample, reference_statistics(sample, schema)

    def drift(self, stats: dict[str, Any], window: Source, schema: Any) -> DriftResult:
        from driftloop.drift import column_drift

        return column_drift(stats, window, schema)

    def report(
        self,
        reference: pd.DataFrame,
        window: Source,
        schema: Any,
        html_path: Path,
        sample_rows: int,
    ) -> dict[str, Any]:
        from driftloop.drift import evidently_report

        return evidently_report(reference, window, schema, html_path, sample_rows=sample_rows)


def design_matrix(pre: Preprocessor, columns: Columns) -> np.ndarray:
    """Preprocessed numerics next to category indexes, one float32 matrix: the input of
    tree models (the categorical columns are flagged to them by position)."""
    x_num, x_cat = pre.transform(columns)
    return np.hstack([x_num, x_cat.astype(np.float32)])
