from pathlib import Path

import pytest

from driftloop.errors import ConfigError
from driftloop.spec import load_spec

DATA = Path(__file__).resolve().parents[2] / "data"


def test_bundled_specs_load_with_absolute_sources():
    bike = load_spec(DATA / "bike_sharing.yaml")
    bank = load_spec(DATA / "bank_marketing.yaml")
    assert bike.task == "regression" and bike.log_target
    assert {"casual", "registered"} <= set(bike.drop)
    assert Path(bike.source_uri).is_file() and Path(bank.source_uri).is_file()
    assert bank.positive_label == "yes" and "duration" in bank.drop


BASE = """
name: toy
source: {path: toy.csv}
time: {column: t}
target: y
task: regression
numeric: [a]
metric: rmse
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
        ("categorical: [a]\n", "columns listed twice"),
        ("drop: [y]\n", "cannot also be a feature or dropped"),
        ("task: binary\n", "metric 'rmse' does not fit task binary"),
        ("metric: f1\n", "metric 'f1' does not fit task regression"),
        ("time: {column: t, row_order: {start: '2020-01-01'}}\n", "exactly one of .*got both"),
        # pydantic names what it expected; the message adds what it found.
        ("task: Regression\n", r"task: Input should be 'regression'.* \(got 'Regression'\)"),
        ("split: {test: 0.7}\n", r"split.test: Input should be less than 0.5 \(got 0.7\)"),
    ],
)
def test_bad_specs_name_the_problem(tmp_path, extra, message):
    lines = [
        line
        for line in BASE.strip().splitlines()
        if line.split(":")[0] not in {e.split(":")[0] for e in extra.splitlines()}
    ]
    path = tmp_path / "spec.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    with pytest.raises(ConfigError, match=message):
        load_spec(path)


def test_binary_needs_positive_label(tmp_path):
    (tmp_path / "s.yaml").write_text(BASE.replace("regression", "binary").replace("rmse", "f1"))
    with pytest.raises(ConfigError, match="positive_label"):
        load_spec(tmp_path / "s.yaml")


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: expected ',' or '\]'.* line 2"):
        load_spec(tmp_path / "bad.yaml")


def test_the_readme_documents_every_spec_key():
    """Every field of the spec's pydantic models, walked recursively, is named in the
    README's spec reference (as `key`)."""
    from pydantic import BaseModel

    from driftloop.spec import DatasetSpec

    readme = (DATA.parent / "README.md").read_text()
    section = readme[readme.index("### Every spec key") : readme.index("## Images")]

    def keys(model: type[BaseModel]) -> set[str]:
        out = set()
        for name, f in model.model_fields.items():
            out.add(name)
            for t in (f.annotation, *getattr(f.annotation, "__args__", ())):
                for inner in (t, *getattr(t, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        out |= keys(inner)
        return out

    every = keys(DatasetSpec) - {"base_dir"}  # set by load_spec, not written
    assert {"max_gap", "ranges", "row_order", "time_unit", "max_pixels"} <= every
    assert sorted(k for k in every if f"`{k}`" not in section) == []
