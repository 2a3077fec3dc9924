"""tritonclient's gRPC client in a process of its own, for the tests.

tritonclient's protos and kserve's define the same ``inference.*`` messages, and protobuf
refuses to load both into one process; the tests' process hosts the kserve server, so the
standard client runs here::

    echo '[{"op": "infer", "model": "bike", "columns": {...}, "types": {...}}]' \\
        | python tests/serving/oip_grpc.py 127.0.0.1:8081

Reads a JSON list of calls on stdin, prints one JSON list of results (the last line):
``{"ok": true, ...}`` or ``{"ok": false, "status": "StatusCode.X", "message": ...}``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException


def _inputs(call: dict) -> list:
    out = []
    for name, values in call["columns"].items():
        datatype = call["types"][name]
        if datatype == "BYTES":
            array = np.array([str(v).encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=np.float64 if datatype == "FP64" else np.float32)
        t = tgrpc.InferInput(name, [len(values)], datatype)
        t.set_data_from_numpy(array)
        out.append(t)
    return out


def _plain(array: np.ndarray) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def run(client: tgrpc.InferenceServerClient, call: dict) -> dict:
    op, model, version = call["op"], call.get("model", ""), call.get("version", "")
    if op == "server_ready":
        return {"ready": client.is_server_ready(), "live": client.is_server_live()}
    if op == "ready":
        return {"ready": client.is_model_ready(model, model_version=version)}
    if op == "metadata":
        meta = client.get_model_metadata(model, model_version=version, as_json=True)
        return {"metadata": meta}
    if op in ("load", "unload"):
        getattr(client, f"{op}_model")(model)
        return {}
    outputs = [tgrpc.InferRequestedOutput(n) for n in call.get("outputs", [])] or None
    result = client.infer(
        model,
        _inputs(call),
        model_version=version,
        outputs=outputs,
        request_id=call.get("id", ""),
        compression_algorithm=call.get("compression"),
    )
    response = result.get_response(as_json=True)
    names = [o["name"] for o in response["outputs"]]
    return {
        "outputs": {n: _plain(result.as_numpy(n)) for n in names},
        "model_version": response.get("model_version"),
        "id": response.get("id"),
        "raw": len(result.get_response().raw_output_contents) == len(names),
    }


def main() -> None:
    calls = json.loads(sys.stdin.read())
    results = []
    with tgrpc.InferenceServerClient(sys.argv[1]) as client:
        for call in calls:
            try:
                results.append({"ok": True, **run(client, call)})
            except InferenceServerException as e:
                results.append({"ok": False, "status": e.status(), "message": e.message()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
