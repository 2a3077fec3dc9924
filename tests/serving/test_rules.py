"""Business rules: validated by pydantic, evaluated with DataFrame.eval."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop.errors import ConfigError
from driftloop.rules import load_rules

FEATURES = {"temp": "numeric", "hr": "categorical", "weathersit": "categorical"}
GOOD = """
rules:
  - name: storm_peak
    when: "weathersit in ['3', '4'] and hr in ['17', '18']"
  - name: cold
    when: "temp < 0.1"
  - name: extreme
    when: "abs(temp - 0.3) > 0.22"
"""


def test_evaluate_names_fired_rules_per_row() -> None:
    rules = load_rules(GOOD, FEATURES)
    df = pd.DataFrame(
        {"temp": [0.5, 0.05, 0.3], "hr": ["17", "17", "2"], "weathersit": ["3", "1", "4"]}
    )
    assert rules.evaluate(df) == [["storm_peak"], ["cold", "extreme"], []]
    # The predictor passes decoded columns, not a DataFrame: same answer.
    columns = {
        "temp": df["temp"].to_numpy(),
        "hr": df["hr"].tolist(),
        "weathersit": df["weathersit"].tolist(),
    }
    assert rules.evaluate(columns) == [["storm_peak"], ["cold", "extreme"], []]


@pytest.mark.parametrize(
    "text,needle",
    [
        ('rules:\n  - name: typo\n    when: "tmp > 1"\n', "'typo'"),
        ('rules:\n  - name: noaction\n    when: "temp > 1"\n    action: block\n', "'noaction'"),
        ('rules:\n  - name: value\n    when: "temp + 1"\n', "'value'"),
        # Only features are in scope, never a variable of the code evaluating the rule.
        ('rules:\n  - name: sneaky\n    when: "pd > 1 or rule > 1"\n', "'sneaky'"),
        ('rules:\n  - when: "temp > 1"\n', "rule '#1'"),
        ("rules:\n  - {name: a, when: 'temp > 1'}\n  - {name: a, when: 'temp > 2'}\n", "'a'"),
        ("rules: [", "YAML"),
    ],
)
def test_bad_rules_file_is_one_config_error_naming_the_rule(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_rules(text, FEATURES)
    assert needle in str(e.value)
