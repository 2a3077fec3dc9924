"""gRPC requests built by hand (kserve's own stub): typed and raw contents decode to the
same predictions; bad input is INVALID_ARGUMENT naming the input, and the server stays
up; gRPC requests reach the payload log."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.conftest import wait_for
from tests.serving.conftest import Receiver, Served, Trained, rows


@pytest.fixture
def stub(server: Served) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc) as channel:
        yield GRPCInferenceServiceStub(channel)


def request(
    trained: Trained, instances: list[dict], raw: bool, model: str = "bike"
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id="hand-made")
    for f in trained.spec.features:
        values = [r[f] for r in instances]
        numeric = f in trained.spec.numeric
        t = req.inputs.add(name=f, datatype="FP64" if numeric else "BYTES", shape=[len(values)])
        if numeric and raw:
            req.raw_input_contents.append(np.asarray(values, dtype="<f8").tobytes())
        elif numeric:
            t.contents.fp64_contents.extend(values)
        else:
            encoded = [str(v).encode() for v in values]
            if raw:
                req.raw_input_contents.append(
                    b"".join(len(b).to_bytes(4, "little") + b for b in encoded)
                )
            else:
                t.contents.bytes_contents.extend(encoded)
    return req


def outputs(response: pb.ModelInferResponse) -> dict[str, list]:
    out = {}
    for i, o in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if o.datatype == "BYTES":
                values, at = [], 0
                while at < len(raw):
                    size = int.from_bytes(raw[at : at + 4], "little")
                    values.append(raw[at + 4 : at + 4 + size].decode())
                    at += 4 + size
                out[o.name] = values
            else:
                out[o.name] = np.frombuffer(raw, dtype="<f8").tolist()
        elif o.datatype == "BYTES":
            out[o.name] = [b.decode() for b in o.contents.bytes_contents]
        else:
            out[o.name] = list(o.contents.fp64_contents)
    return out


def test_typed_and_raw_contents_predict_alike(
    stub: GRPCInferenceServiceStub, bike: Trained, bank: Trained
) -> None:
    for model, trained in (("bike", bike), ("bank", bank)):
        inst = rows(trained, 7)
        typed = stub.ModelInfer(request(trained, inst, raw=False, model=model))
        raw = stub.ModelInfer(request(trained, inst, raw=True, model=model))
        assert not typed.raw_output_contents and raw.raw_output_contents  # answered in kind
        assert outputs(typed) == outputs(raw)
        assert len(outputs(typed)["prediction"]) == 7 and typed.id == "hand-made"


def invalid(stub: GRPCInferenceServiceStub, req: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    return str(e.value.details())


def test_bad_input_names_the_input(stub: GRPCInferenceServiceStub, bike: Trained) -> None:
    inst = rows(bike, 2)
    temp = bike.spec.features.index("temp")
    hr = bike.spec.features.index("hr")

    short = request(bike, inst, raw=True)
    short.raw_input_contents[temp] = short.raw_input_contents[temp][:12]
    assert "'temp'" in invalid(stub, short) and "12 bytes" in invalid(stub, short)

    mixed = request(bike, inst, raw=True)
    mixed.inputs[temp].contents.fp64_contents.extend([0.5, 0.5])
    assert "'temp'" in invalid(stub, mixed) and "typed contents" in invalid(stub, mixed)

    missing = request(bike, inst, raw=True)
    del missing.raw_input_contents[-1]
    assert "raw_input_contents" in invalid(stub, missing)

    truncated = request(bike, inst, raw=True)
    truncated.raw_input_contents[hr] = truncated.raw_input_contents[hr][:-1]
    assert "'hr'" in invalid(stub, truncated)

    nan = request(bike, inst, raw=True)
    nan.raw_input_contents[temp] = np.array([np.nan, 0.5], dtype="<f8").tobytes()
    assert "'temp'" in invalid(stub, nan)

    wrong_field = request(bike, inst, raw=False)
    wrong_field.inputs[temp].contents.Clear()
    wrong_field.inputs[temp].contents.int64_contents.extend([1, 2])  # FP64 lives elsewhere
    assert "'temp'" in invalid(stub, wrong_field)

    unknown_output = request(bike, inst, raw=True)
    unknown_output.outputs.add(name="score")
    details = invalid(stub, unknown_output)
    assert "'score'" in details and "prediction" in details

    timestamp = request(bike, inst, raw=True)
    timestamp.parameters["timestamp"].string_param = "yesterday"
    assert "timestamp" in invalid(stub, timestamp)

    # and the server still answers, one output as asked
    good = request(bike, inst, raw=True)
    good.parameters["timestamp"].string_param = "2011-02-27T17:00:00+00:00"
    good.outputs.add(name="prediction")
    assert [o.name for o in stub.ModelInfer(good).outputs] == ["prediction"]


def test_grpc_requests_are_logged(
    stub: GRPCInferenceServiceStub, bike: Trained, receiver: Receiver
) -> None:
    """The predictor's own emitter logs gRPC requests like V2 JSON ones: raw BYTES as
    strings, numbers as numbers, the response's outputs."""
    receiver.posts.clear()
    inst = rows(bike, 2)
    req = request(bike, inst, raw=True, model="bike-logged")
    req.id = "grpc-logged"
    response = stub.ModelInfer(req, metadata=(("x-request-id", "grpc-logged"),))

    def events() -> dict[str, dict]:
        return {
            e["type"].rsplit(".", 1)[1]: e["data"]
            for _, batch in list(receiver.posts)
            for e in batch  # type: ignore[attr-defined]
            if e["id"] == "grpc-logged"
        }

    assert wait_for(lambda: len(events()) == 2)
    logged = events()
    tensors = {t["name"]: t for t in logged["request"]["inputs"]}
    assert tensors["temp"]["data"] == [r["temp"] for r in inst]
    assert tensors["hr"]["data"] == [str(r["hr"]) for r in inst]
    assert logged["response"]["outputs"][0]["data"] == outputs(response)["prediction"]
