"""Model families: every kind of model driftloop trains, serves and watches, behind one
interface (``driftloop.families.base``). A family is one module in this package named
after it (``tabular-torch`` lives in ``tabular_torch.py``) that defines ``FAMILY``, an
instance of a ``ModelFamily`` subclass; nothing else needs to change to add one
(docs/model-families.md).

    family = get_family("tabular-torch")
    result = family.train(splits, spec, family.default_params())
    model = family.load(directory)            # a FittedModel
    model.predict(columns)                    # the one prediction path

Modules are imported on first use, so a process that never trains or serves (the
collector) never imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from driftloop.errors import ConfigError
from driftloop.families.base import FittedModel, ModelFamily, TrainResult

__all__ = ["FittedModel", "ModelFamily", "TrainResult", "get_family", "family_names", "load_model"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_SHARED = {"base", "tabular"}  # modules of this package that hold no family


def family_names() -> list[str]:
    """Every family this installation has, by name."""
    here = Path(__file__).parent
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules([str(here)])
        if m.name not in _SHARED and not m.name.startswith("_")
    )


def get_family(name: str, where: str = "") -> ModelFamily:
    """The family called ``name``; ConfigError naming ``where`` (e.g. a registry version)
    when this installation has no such family."""
    if not isinstance(name, str) or not _NAME.match(name) or name not in family_names():
        at = f"{where}: " if where else ""
        raise ConfigError(
            f"{at}unknown model family {name!r}; this driftloop knows {family_names()} "
            "(a newer release may have written it: upgrade driftloop to serve it)"
        )
    module = importlib.import_module(f"driftloop.families.{name.replace('-', '_')}")
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, ModelFamily) or family.name != name:
        raise ConfigError(f"driftloop.families.{name.replace('-', '_')} defines no FAMILY {name!r}")
    return family


def load_model(directory: Path, family: str, where: str = "") -> FittedModel:
    """A fitted model from the family's files in ``directory``."""
    return get_family(family, where or str(directory)).load(directory)
