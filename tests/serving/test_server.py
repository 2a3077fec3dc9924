"""The predictor in a real kserve REST server on 127.0.0.1: both protocols, no skew."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd

from driftloop.families import load_model
from tests.serving.conftest import Trained, rows


def offline(trained: Trained, instances: list[dict]) -> dict[str, np.ndarray]:
    """FittedModel.predict on the same rows, from the registered files."""
    return load_model(trained.dir, "tabular-torch").predict(pd.DataFrame(instances))


def v2_body(trained: Trained, instances: list[dict]) -> dict:
    typed = [(f, "FP64") for f in trained.spec.numeric]
    typed += [(f, "BYTES") for f in trained.spec.categorical]
    return {
        "inputs": [
            {"name": f, "datatype": d, "shape": [len(instances)], "data": [r[f] for r in instances]}
            for f, d in typed
        ]
    }


def test_v1_objects_and_lists_equal_offline_predict(client: httpx.Client, bike: Trained) -> None:
    inst = rows(bike, 25)
    expected = offline(bike, inst)["value"]
    r = client.post("/v1/models/bike:predict", json={"instances": inst})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "bike" and body["model_version"] == "1"
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-12)
    as_lists = [[row[f] for f in bike.spec.features] for row in inst]
    r2 = client.post(
        "/v1/models/bike:predict", json={"instances": as_lists, "timestamp": "2011-02-27T17:00:00Z"}
    )
    assert r2.status_code == 200, r2.text
    assert r2.json()["predictions"] == body["predictions"]


def test_v2_equals_offline_predict(client: httpx.Client, bike: Trained) -> None:
    inst = rows(bike, 25)
    r = client.post("/v2/models/bike/infer", json=v2_body(bike, inst))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] and body["model_version"] == "1"
    outs = {o["name"]: o for o in body["outputs"]}
    assert outs["prediction"]["datatype"] == "FP64"
    np.testing.assert_allclose(outs["prediction"]["data"], offline(bike, inst)["value"], rtol=1e-12)
    fired = [json.loads(x) for x in outs["rules_fired"]["data"]]
    assert len(fired) == 25


def test_classification_label_and_probability(client: httpx.Client, bank: Trained) -> None:
    inst = rows(bank, 30)
    exp = offline(bank, inst)
    r = client.post("/v1/models/bank:predict", json={"instances": inst})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == exp["label"].tolist()
    np.testing.assert_allclose(body["probabilities"], exp["probability"], rtol=1e-12)
    assert "rules_fired" not in body  # no rules file in this version
    r2 = client.post("/v2/models/bank/infer", json=v2_body(bank, inst))
    assert r2.status_code == 200, r2.text
    outs = {o["name"]: o for o in r2.json()["outputs"]}
    assert outs["prediction"]["datatype"] == "BYTES"
    assert outs["prediction"]["data"] == exp["label"].tolist()
    np.testing.assert_allclose(outs["probability"]["data"], exp["probability"], rtol=1e-12)
    assert "rules_fired" not in outs


def test_rules_fire_per_row(client: httpx.Client, bike: Trained) -> None:
    base = rows(bike, 1)[0]
    storm = {**base, "weathersit": "3", "hr": "17", "temp": 0.5}
    calm = {**base, "weathersit": "1", "hr": "3", "temp": 0.5}
    both = {**storm, "temp": 0.05}
    r = client.post("/v1/models/bike:predict", json={"instances": [storm, calm, both]})
    assert r.status_code == 200, r.text
    assert r.json()["rules_fired"] == [["storm_peak"], [], ["storm_peak", "freezing"]]


def test_v2_metadata_lists_inputs_and_outputs(client: httpx.Client, bike: Trained) -> None:
    r = client.get("/v2/models/bike")
    assert r.status_code == 200, r.text
    meta = r.json()
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert list(inputs) == bike.spec.features
    assert inputs["temp"] == {"name": "temp", "datatype": "FP64", "shape": [-1]}
    assert inputs["hr"]["datatype"] == "BYTES"
    assert [o["name"] for o in meta["outputs"]] == ["prediction", "rules_fired"]
    bank_meta = client.get("/v2/models/bank").json()
    assert [o["name"] for o in bank_meta["outputs"]] == ["prediction", "probability"]


def test_unknown_category_bucket_accepts(client: httpx.Client, bike: Trained) -> None:
    inst = {**rows(bike, 1)[0], "weathersit": "never-seen"}
    r = client.post("/v1/models/bike:predict", json={"instances": [inst]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == offline(bike, [inst])["value"].tolist()
