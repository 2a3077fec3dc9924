"""Model load/unload (enabled on the test server): an unloaded model fails the readiness
probe, over HTTP and gRPC, until it is loaded again. Disabled by default: see
test_container.py."""

from __future__ import annotations

import grpc
import httpx
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.serving.conftest import Served, Trained, rows

MODEL = "bike-unload"  # registered only for this test


def probes(client: httpx.Client, stub: GRPCInferenceServiceStub) -> tuple[int, int, bool]:
    ready = client.get("/v2/health/ready").status_code
    live = client.get("/v2/health/live").status_code
    return ready, live, stub.ServerReady(pb.ServerReadyRequest()).ready


def test_unload_fails_readiness_until_loaded(
    server: Served, client: httpx.Client, bike: Trained
) -> None:
    predict = f"/v1/models/{MODEL}:predict"
    body = {"instances": rows(bike, 1)}
    with grpc.insecure_channel(server.grpc) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert probes(client, stub) == (200, 200, True)
        try:
            # over HTTP
            r = client.post(f"/v2/repository/models/{MODEL}/unload")
            assert r.status_code == 200, r.text
            assert probes(client, stub) == (503, 200, False)  # no traffic, no restart
            assert client.post(predict, json=body).status_code == 404
            assert client.get(f"/v2/models/{MODEL}/ready").status_code == 404
            r = client.post(f"/v2/repository/models/{MODEL}/load")
            assert r.status_code == 200, r.text
            assert probes(client, stub) == (200, 200, True)
            assert client.post(predict, json=body).status_code == 200
            # over gRPC
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL))
            assert probes(client, stub) == (503, 200, False)
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
        finally:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL))
        assert probes(client, stub) == (200, 200, True)
        assert client.post(predict, json=body).status_code == 200
    r = client.post("/v2/repository/models/nope/load")
    assert r.status_code == 404
