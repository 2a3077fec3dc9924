"""Data kinds: what one row of a dataset is, behind one interface.

A dataset spec's ``kind`` (``driftloop.spec``; absent means ``tabular``) names a module of
this package that defines ``KIND``, an instance of a ``DataKind`` subclass. The kind owns
what differs between kinds of data before a model family sees them:

    kind.read(spec)              the whole source as a frame: one row per example, the
                                 target, ``event_time``; (``driftloop.data.load_window``
                                 cuts the time window and sorts)
    kind.validate(df, spec)      the data-quality report the pipeline's validate step writes
    kind.baselines(splits, spec) the references the gate compares every challenger with

The input schema of each kind is a member of ``formats.InputSchema`` (a union on
``kind``), and each family declares the kinds it learns (``ModelFamily.kinds``). Adding a
kind (user/item interactions for a recommender, say) is one module here, one schema class
in ``formats.py``, a section in the spec if it needs options, and the families that learn
it: docs/model-families.md, "Adding a data kind".

    tabular       named numeric and categorical columns     datakinds/tabular.py
    image         one image per row, stored as PNG bytes     datakinds/image.py
    interactions  user, item, time (a recommender)          datakinds/interactions.py
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from driftloop.errors import ConfigError

if TYPE_CHECKING:  # not driftloop.data or .validation: they dispatch here (no cycle)
    import pandas as pd

    from driftloop.spec import DatasetSpec


class DataKind(ABC):
    name: ClassVar[str]
    # The baseline (a key of ``baselines``) no served model may fall below: the gate's floor.
    floor: ClassVar[str] = "dumb"

    @abstractmethod
    def read(self, spec: DatasetSpec) -> pd.DataFrame:
        """Every row of the spec's source: the kind's input columns, the target (typed
        for the task) and ``event_time`` (naive UTC). Bad input is one DataError naming
        the file, column or label."""

    @abstractmethod
    def validate(self, df: pd.DataFrame, spec: DatasetSpec) -> Any:
        """Quality checks of a window before any training (the pipeline's validate step):
        a ``driftloop.validation.ValidationReport``."""

    @abstractmethod
    def baselines(self, splits: Any, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        """Test-window metrics, on ``splits`` (a ``driftloop.data.Splits``), of the references
        the gate compares a challenger with: ``floor`` must be beaten, the others are reported."""


def get_kind(name: str) -> DataKind:
    """The data kind called ``name`` (a spec's ``kind``)."""
    try:
        module = importlib.import_module(f"driftloop.datakinds.{name}")
    except ModuleNotFoundError as e:
        raise ConfigError(f"unknown data kind {name!r}") from e
    kind = getattr(module, "KIND", None)
    if not isinstance(kind, DataKind) or kind.name != name:
        raise ConfigError(f"driftloop.datakinds.{name} defines no KIND {name!r}")
    return kind
