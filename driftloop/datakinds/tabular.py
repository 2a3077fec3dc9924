"""``tabular``: named numeric and categorical columns from a CSV or Parquet file (the
default kind). The logic lives where it always did: ``driftloop.data`` (reading and typing),
``driftloop.validation`` and ``driftloop.baselines``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftloop.datakinds import DataKind

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.data import Splits
    from driftloop.spec import DatasetSpec
    from driftloop.validation import ValidationReport


class Tabular(DataKind):
    name = "tabular"

    def read(self, spec: DatasetSpec) -> pd.DataFrame:
        from driftloop.data import needed_columns, read_source, typed

        return typed(read_source(spec, needed_columns(spec)), spec)

    def validate(self, df: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
        from driftloop.validation import validate_tabular

        return validate_tabular(df, spec)

    def baselines(self, splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        from driftloop.baselines import tabular_baselines

        return tabular_baselines(splits, spec)


KIND = Tabular()
