"""Business rules: conditions in driftloop's expression language, compiled once against
the input schema when a version is registered, promoted and loaded; hostile rules are
refused before anything runs, and the predictor keeps answering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from driftloop.errors import ConfigError
from driftloop.formats import (
    Alias,
    Aliases,
    FileEntry,
    Lineage,
    Manifest,
    TabularSchema,
    VersionFiles,
    aliases_key,
)
from driftloop.ports import free_port
from driftloop.registry import Registry, sha256
from driftloop.rules import Rule, RuleSet, check_version_rules, load_rules
from driftloop.steps import register
from driftloop.store import LocalStore
from tests.conftest import ROOT, wait_for
from tests.serving.conftest import Trained, rows

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


def rules_yaml(*whens: str, name: str = "evil") -> str:
    rules = [{"name": f"{name}{i or ''}", "when": w} for i, w in enumerate(whens)]
    return yaml.safe_dump({"rules": rules})


# Payloads from the security review: on pandas.eval each ran as the server, at load time
# and on every request, with its environment (S3 credentials) in reach.
PAYLOADS = [
    "hr.__init__.__globals__.get('__builtins__').get('__import__').__self__"
    ".__import__('os').system('touch {canary}') == 0",
    "hr.__init__.__globals__.get('__builtins__').get('__import__').__self__"
    ".open('{canary}', 'w').write('x') == 1",
    "temp.__init__.__globals__.get('__builtins__').get('__import__').__self__"
    ".__import__('pathlib').Path('{canary}').touch() == 0",
    "hr.__class__.__init__.__globals__.get('__builtins__').get('__import__')('os')"
    ".system('touch {canary}') == 0",
    "open('{canary}', 'w').write('x') == 1",
    "eval(\"__import__('os').system('touch {canary}')\") == 0",
    "getattr(hr, '__init__') == 0",
    "temp.__class__.__mro__[-1].__subclasses__()[0] == 0",
    "(lambda: __import__('os').system('touch {canary}'))() == 0",
    "[__import__('os').system('touch {canary}') for _ in hr] == 0",
    "abs(temp, out=temp) > 0",
]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("features", [FEATURES, None], ids=["schema", "no-schema"])
def test_hostile_rules_are_refused_at_load_and_never_run(
    payload: str, features: dict | None, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    text = rules_yaml("temp > 0.5", payload.format(canary=canary), name="r")
    with pytest.raises(ConfigError) as e:
        load_rules(text, features)
    message = str(e.value)
    assert message.startswith("rule 'r1': ") and "not allowed" in message, message
    assert "\n" not in message
    # A RuleSet built without load_rules checks the language on first use, as well.
    with pytest.raises(ConfigError, match="rule 'r1': .*not allowed"):
        RuleSet(rules=[Rule(name="r1", when=payload.format(canary=canary))]).evaluate(
            {"temp": [1.0], "hr": ["1"], "weathersit": ["1"]}
        )
    assert not canary.exists()


def test_a_power_tower_neither_stalls_loading_nor_evaluating() -> None:
    # pandas.eval computed 9 ** 9 ** 9 as a Python integer: the predictor never answered
    # again. A subprocess, so that a stall fails this test instead of hanging the run.
    code = f"""
import pandas as pd
from driftloop.rules import load_rules
rules = load_rules({rules_yaml("temp > 9 ** 9 ** 9", "-temp < -(9 ** 9 ** 9)")!r}, {FEATURES!r})
frame = pd.DataFrame({{"temp": [0.5, 1e308], "hr": ["1", "2"], "weathersit": ["1", None]}})
print(rules.evaluate(frame))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[], []]"


@pytest.mark.parametrize(
    "text,message",
    [
        (rules_yaml(*["temp > 1"] * 101), "rules: List should have at most 100 items"),
        (
            rules_yaml(*["temp > 1" + " or temp > 1" * 30] * 6),
            "too large: 564 > 500 expression nodes",
        ),
        ("# padding\n" * 7000 + rules_yaml("temp > 1"), "rules file is too large: 70"),
        (rules_yaml("temp in [" + ", ".join(["1"] * 10**6) + "]"), "rules file is too large"),
        (
            rules_yaml("(" * 500 + "temp" + ")" * 500 + " > 1"),
            "rule 'evil': expression is too long",
        ),
        (rules_yaml("temp > 1" + "0" * 100), "rule 'evil': number out of range"),
        (rules_yaml("hr < '17'"), "rule 'evil': `<` compares numbers, not a string"),
    ],
)
def test_bounds_of_a_rules_file(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_rules(text, FEATURES)
    assert message in str(e.value) and len(str(e.value)) < 400


def test_the_costliest_file_the_bounds_allow_is_still_cheap() -> None:
    from driftloop.rules import MAX_RULE_NODES

    # Column-to-column string equality is the costliest node: fill the file with it.
    whens, left = [], MAX_RULE_NODES
    while left >= 4:
        terms = min(60, (left - 1) // 3)  # 3 nodes a term, 1 for the `or`
        whens.append(" or ".join(["a == b"] * terms))
        left -= 3 * terms + (terms > 1)
    rules = load_rules(rules_yaml(*whens), {"a": "categorical", "b": "categorical"})
    assert sum(p.nodes for p in rules.parsed()) > MAX_RULE_NODES - 4
    n = 1000
    cols = {
        "a": [str(i % 4) for i in range(n)],
        "b": [str(i % 3) if i % 5 else None for i in range(n)],
    }
    start = time.perf_counter()
    fired = rules.evaluate(cols)
    assert time.perf_counter() - start < 1.0  # measured: a few ms (bench/rules.py)
    assert len(fired[1]) == len(whens) and fired[5] == [] and fired[0] == []


def test_missing_values_never_fire_a_comparison() -> None:
    rules = load_rules(GOOD, FEATURES)
    cols = {"temp": np.array([np.nan, np.nan]), "hr": [None, "17"], "weathersit": ["3", None]}
    assert rules.evaluate(cols) == [[], []]
    negated = load_rules(rules_yaml("hr != '17'", "not (temp < 0.1)"), FEATURES)
    assert negated.evaluate(cols) == [["evil", "evil1"], ["evil1"]]


def test_rules_quote_columns_that_are_not_identifiers() -> None:
    features = {"nr.employed": "numeric", "default": "categorical"}
    rules = load_rules(rules_yaml("`nr.employed` > 5100 and default != 'yes'"), features)
    assert rules.evaluate({"nr.employed": [5200.0, 5000.0], "default": ["no", "no"]}) == [
        ["evil"],
        [],
    ]


def test_check_version_rules_compiles_against_the_schema() -> None:
    schema = TabularSchema.of_columns(["temp"], ["hr", "weathersit"])
    assert len(check_version_rules(GOOD.encode(), schema, "m v1/rules.yaml").rules) == 3
    bad = rules_yaml("tmp > 1", name="typo")
    with pytest.raises(ConfigError) as e:
        check_version_rules(bad, schema, "m v1/rules.yaml")
    assert str(e.value).startswith("m v1/rules.yaml: rule 'typo': unknown column 'tmp'")
    with pytest.raises(ConfigError, match="m v1/rules.yaml: not UTF-8"):
        check_version_rules(b"\xff\xfe", schema, "m v1/rules.yaml")


# -- registration, promotion and the predictor -------------------------------------------
@pytest.mark.parametrize(
    "when,message",
    [
        ("tmp > 1", "rule 'evil': unknown column 'tmp'"),
        (PAYLOADS[0], "rule 'evil': attribute access is not allowed: `hr.__init__`"),
    ],
)
def test_register_refuses_rules_that_do_not_compile_against_the_schema(
    bike: Trained, tmp_path: Path, when: str, message: str
) -> None:
    canary = tmp_path / "canary"
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml(when.format(canary=canary)))
    spec = bike.spec.model_copy(update={"rules": str(rules)})
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ConfigError) as e:
        register(bike.model_dir, bike.train_path, bike.test_path, spec, store, Lineage(), True)
    assert str(e.value) == f"{rules}: {message}" or (
        str(e.value).startswith(f"{rules}: {message}") and "\n" not in str(e.value)
    )
    assert store.list("models") == []  # nothing registered, not even a claim
    assert not canary.exists()


def hostile_version(bike: Trained, registry: Registry, rules: str, tmp_path: Path) -> int:
    """A version whose files are all sound but whose rules.yaml is ``rules``, registered
    straight through the registry (as a writer with store access could)."""
    src = tmp_path / "src"
    shutil.copytree(bike.dir, src)
    (src / VersionFiles.MANIFEST).unlink()
    (src / VersionFiles.RULES).write_text(rules)
    return registry.register(bike.spec.name, src, Lineage(), "tabular-torch").version


@dataclass
class Follower:
    """``driftloop serve`` in a subprocess, following the production alias of a copy of
    bike's store: a stall there fails a test instead of hanging the test run."""

    registry: Registry
    url: str
    log: Path  # its stdout and stderr
    body: dict  # a V1 request of three rows

    def predict(self) -> dict:
        r = httpx.post(f"{self.url}/v1/models/{MODEL}:predict", json=self.body, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()


MODEL = "bike-sharing"


@pytest.fixture(scope="module")
def follower(bike: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Follower]:
    root = tmp_path_factory.mktemp("follow")
    shutil.copytree(bike.store.root, root / "store")
    port, log = free_port(), root / "server.log"
    env = {**os.environ, "DRIFTLOOP_STORE_URI": str(root / "store")}
    cmd = [sys.executable, "-c", "import sys; from driftloop.cli import main; sys.exit(main())"]
    cmd += ["serve", "--model", MODEL, "--port", str(port), "--watch-interval", "0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None  # stop waiting if it died

    try:
        assert wait_for(ready, timeout=90) and proc.poll() is None, log.read_text()
        yield Follower(Registry(LocalStore(root / "store")), url, log, {"instances": rows(bike, 3)})
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # stuck where signal handlers cannot run
            proc.kill()
            proc.wait(10)


def test_a_power_tower_rule_neither_stalls_the_predictor_nor_blocks_rollback(
    follower: Follower, bike: Trained, tmp_path: Path
) -> None:
    reg, before = follower.registry, follower.registry.alias(MODEL, "production")
    assert follower.predict()["model_version"] == str(before)
    text = rules_yaml("temp > 9 ** 9 ** 9", "weathersit in ['1', '2', '3', '4']", name="r")
    version = hostile_version(bike, reg, text, tmp_path)
    reg.promote(MODEL, version)  # a valid rule: temp > inf, never true
    assert wait_for(lambda: follower.predict()["model_version"] == str(version), timeout=30)
    body = follower.predict()
    assert body["rules_fired"] == [["r1"]] * 3
    assert httpx.get(f"{follower.url}/metrics", timeout=5).status_code == 200
    assert reg.rollback(MODEL) == before  # and the rollback is picked up
    assert wait_for(lambda: follower.predict()["model_version"] == str(before), timeout=30)


@pytest.mark.parametrize(
    "when,message",
    [
        (PAYLOADS[0], "rule 'evil': attribute access is not allowed: `hr.__init__`"),
        ("tmp > 1", "rule 'evil': unknown column 'tmp'"),
    ],
)
def test_a_version_with_rules_that_do_not_compile_is_never_served(
    follower: Follower, bike: Trained, tmp_path: Path, when: str, message: str
) -> None:
    canary = tmp_path / "canary"
    reg, current = follower.registry, follower.registry.alias(MODEL, "production")
    version = hostile_version(bike, reg, rules_yaml(when.format(canary=canary)), tmp_path)
    with pytest.raises(ConfigError) as e:  # promotion verifies the rules first
        reg.promote(MODEL, version)
    assert str(e.value).startswith(f"{MODEL} v{version}/rules.yaml: {message}")
    assert reg.alias(MODEL, "production") == current
    # Someone with write access to the store moves the alias anyway: the server tries to
    # load the version, refuses it, and the old one keeps answering.
    saved = reg.store.get(aliases_key(MODEL))
    forced = Aliases(production=Alias(version=version, updated="now"), previous=None)
    reg.store.put(aliases_key(MODEL), forced.dump())
    try:
        assert wait_for(lambda: f"v{version}/rules.yaml: {message}" in follower.log.read_text())
        for _ in range(5):
            assert follower.predict()["model_version"] == str(current)
    finally:
        reg.store.put(aliases_key(MODEL), saved)
    assert not canary.exists()


def test_the_container_refuses_to_start_on_hostile_rules(bike: Trained, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    models = tmp_path / "models"
    shutil.copytree(bike.dir, models)
    (models / VersionFiles.RULES).write_text(rules_yaml(PAYLOADS[0].format(canary=canary)))
    manifest = Manifest.parse((models / VersionFiles.MANIFEST).read_bytes(), "manifest")
    data = (models / VersionFiles.RULES).read_bytes()
    manifest.files[VersionFiles.RULES] = FileEntry(sha256=sha256(data), bytes=len(data))
    (models / VersionFiles.MANIFEST).write_bytes(manifest.dump())  # a consistent copy
    cmd = [sys.executable, "-m", "serving", "--model_dir", str(models), "--model_name", "bike"]
    cmd += ["--http_port", str(free_port()), "--grpc_port", str(free_port())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert out.returncode == 1
    assert "rules.yaml: rule 'evil': attribute access is not allowed" in out.stderr
    assert not canary.exists()


def test_rules_loaded_without_features_take_the_kinds_of_the_columns_given() -> None:
    with_schema, without = load_rules(GOOD, FEATURES), load_rules(GOOD)
    cols = {"temp": [0.05, None, 0.6], "hr": ["17", None, "17"], "weathersit": ["3", "3", None]}
    frame = pd.DataFrame(cols)
    expected = [["storm_peak", "cold", "extreme"], [], ["extreme"]]
    assert with_schema.evaluate(cols) == without.evaluate(cols) == expected
    assert without.evaluate(frame) == expected
    with pytest.raises(ConfigError, match="rule 'storm_peak': unknown column 'weathersit'"):
        load_rules(GOOD).evaluate({"temp": [1.0], "hr": ["1"]})
