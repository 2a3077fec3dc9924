"""Serving fixtures: two small real models (trained in-process, registered through the
real registry path) and one real kserve REST server with driftloop's gRPC server beside
it, on 127.0.0.1, hosting several predictors (kserve allows one REST app per process).
Model load/unload is enabled on it (for tests/serving/test_repository.py); the default,
disabled, is tested on the container entrypoint in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from driftloop.data import load_window, split_by_time
from driftloop.formats import Lineage
from driftloop.ports import free_port
from driftloop.registry import Registry, VersionRef
from driftloop.spec import DatasetSpec, load_spec
from driftloop.steps import register, train_trial
from driftloop.store import LocalStore
from serving.artifacts import Bundle, load_dir, load_from_registry
from serving.model import Predictor
from serving.payload_log import LoggerConfig, PayloadEmitter
from serving.server import LocalServer
from serving.shadow import Shadow
from serving.watch import AliasWatcher
from tests.conftest import ROOT

HERE = Path(__file__).parent
QUICK = {"family": "tabular-torch", "params": {"max_epochs": 2, "hidden": 32, "layers": 1}}
# A second, different bike model to shadow the first (its predictions differ from v1's).
QUICK_SHADOW = {"family": "tabular-torch", "params": {"max_epochs": 1, "hidden": 16, "layers": 1}}
QUICK_RECSYS = {"family": "recsys-mf", "params": {"max_epochs": 5, "dim": 16}}
QUICK_IMAGE = {
    "family": "image-cnn",
    "params": {"max_epochs": 3, "filters": 8, "embedding": 8, "patience": 3},
}
# kserve 0.21 returns fastapi's ORJSONResponse, which fastapi >= 0.120 deprecates with a
# UserWarning (not a DeprecationWarning, so pyproject's kserve filter misses it).
KSERVE_WARNING = "ignore:ORJSONResponse is deprecated:UserWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings(KSERVE_WARNING))


@dataclass
class Trained:
    spec: DatasetSpec
    store: LocalStore
    registry: Registry
    test: pd.DataFrame  # held-out rows with features, target and time
    dir: Path  # a verified copy of v1: what /mnt/models holds in the cluster
    model_dir: Path  # the trained model (to register again as v2)
    train_path: Path
    test_path: Path


def train_and_register(
    spec: DatasetSpec, start: str | None, end: str | None, root: Path, trial: dict = QUICK
) -> Trained:
    s = split_by_time(load_window(spec, start, end), spec)
    model_dir, train_p, test_p = root / "model", root / "train.parquet", root / "test.parquet"
    s.train.to_parquet(train_p, index=False)
    s.validation.to_parquet(root / "validation.parquet", index=False)
    s.test.to_parquet(test_p, index=False)
    train_trial(train_p, root / "validation.parquet", spec, trial, model_dir)
    store = LocalStore(root / "store")
    ref = register(model_dir, train_p, test_p, spec, store, Lineage(), promote=True)
    registry = Registry(store)
    version_dir = registry.download(ref, root / "mnt-models")
    return Trained(spec, store, registry, s.test, version_dir, model_dir, train_p, test_p)


@pytest.fixture(scope="session")
def bike(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    spec = spec.model_copy(update={"rules": str(HERE / "bike_rules.yaml")})
    return train_and_register(spec, "2011-01-01", "2011-03-01", tmp_path_factory.mktemp("bike"))


@pytest.fixture(scope="session")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    spec = load_spec(ROOT / "data" / "bank_marketing.yaml")
    spec = spec.model_copy(update={"unknown_category": "reject"})
    return train_and_register(spec, "2008-05-01", "2008-07-01", tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small image model on scikit-learn's digits (a few epochs: serving, not accuracy)."""
    spec = load_spec(ROOT / "data" / "digits.yaml")
    return train_and_register(spec, None, None, tmp_path_factory.mktemp("digits"), QUICK_IMAGE)


@pytest.fixture(scope="session")
def recsys(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small recommender on synthetic interactions (a user's own CSV and spec)."""
    from tests.interactions import write_toy_interactions

    spec = load_spec(write_toy_interactions(tmp_path_factory.mktemp("recsys-data")))
    return train_and_register(spec, None, None, tmp_path_factory.mktemp("recsys"), QUICK_RECSYS)


class Receiver:
    """A fake collector: records every POST's headers and JSON body, answers 200. It can
    be stopped and started again on the same port (a collector restart)."""

    def __init__(self, port: int = 0) -> None:
        self.posts: list[tuple[dict, object]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                posts.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._handler, self._port = Handler, port
        self.start()

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler)
        self._port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def events(self) -> list[dict]:
        return [e for _, batch in list(self.posts) for e in batch]  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def shadowed(bike: Trained, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry holding bike's model as v1 and a differently trained one as v2."""
    root = tmp_path_factory.mktemp("shadowed")
    store = LocalStore(root / "store")
    register(bike.model_dir, bike.train_path, bike.test_path, bike.spec, store, Lineage(), True)
    validation = bike.train_path.parent / "validation.parquet"
    train_trial(bike.train_path, validation, bike.spec, QUICK_SHADOW, root / "v2")
    ref = register(root / "v2", bike.train_path, bike.test_path, bike.spec, store, Lineage(), False)
    assert ref.version == 2
    return Registry(store)


class Exploding:
    """A shadow model that raises on every request (only its predict path is called)."""

    def predict(self, columns: object) -> dict:
        raise RuntimeError("the shadow exploded")

    def predict_logged(self, columns: object) -> tuple[dict, None]:
        raise RuntimeError("the shadow exploded")


def shadow_predictors(
    bike: Trained, shadowed: Registry, emitter: Callable[[str], PayloadEmitter]
) -> list[Predictor]:
    """bike v1 served with: v2 in shadow; a version that does not exist; a shadow that
    raises; v2 on a share of 0; each logging to the fake collector."""
    name = bike.spec.name
    v1, v2 = VersionRef(name, 1), VersionRef(name, 2)

    def champion() -> Bundle:
        return load_from_registry(shadowed, v1)

    def exploding() -> Bundle:
        return replace(load_from_registry(shadowed, v2), model=Exploding())  # type: ignore[arg-type]

    made = [
        ("bike-shadowed", Shadow("bike-shadowed", 2, lambda: load_from_registry(shadowed, v2))),
        (
            "bike-shadow-missing",
            Shadow(
                "bike-shadow-missing", 9, lambda: load_from_registry(shadowed, VersionRef(name, 9))
            ),
        ),
        ("bike-shadow-raising", Shadow("bike-shadow-raising", 2, exploding)),
        (
            "bike-shadow-off",
            Shadow("bike-shadow-off", 2, lambda: load_from_registry(shadowed, v2), share=0.0),
        ),
    ]
    return [Predictor(n, champion, emitter=emitter(n), shadow=sh) for n, sh in made]


@dataclass
class Served:
    url: str
    grpc: str  # host:port of the gRPC server
    watch: Trained  # the store the "bike-watch" model follows


@pytest.fixture(scope="session")
def server(
    bike: Trained,
    bank: Trained,
    digits: Trained,
    recsys: Trained,
    receiver: Receiver,
    shadowed: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens here
    watch = train_and_register(
        bike.spec, "2011-01-01", "2011-03-01", tmp_path_factory.mktemp("watch")
    )

    def logger(url: str, name: str) -> PayloadEmitter:
        return PayloadEmitter(
            LoggerConfig(url=url, inference_service=name, namespace="ns", timeout_s=0.5), name
        )

    predictors = [
        Predictor("bike", lambda: load_dir(bike.dir)),
        Predictor("bank", lambda: load_dir(bank.dir), max_batch_rows=50),
        Predictor("bike-deadlog", lambda: load_dir(bike.dir), emitter=logger(dead, "bike-deadlog")),
        Predictor(
            "bike-logged", lambda: load_dir(bike.dir), emitter=logger(receiver.url, "bike-logged")
        ),
        Predictor("bike-unload", lambda: load_dir(bike.dir)),  # only test_repository unloads
    ]
    predictors += [
        Predictor("digits", lambda: load_dir(digits.dir), max_batch_rows=50),
        Predictor(
            "digits-logged",
            lambda: load_dir(digits.dir),
            emitter=logger(receiver.url, "digits-logged"),
        ),
    ]
    predictors += [
        Predictor("toy-recsys", lambda: load_dir(recsys.dir), max_batch_rows=50),
        Predictor(
            "toy-recsys-logged",
            lambda: load_dir(recsys.dir),
            emitter=logger(receiver.url, "toy-recsys-logged"),
        ),
    ]
    predictors += shadow_predictors(bike, shadowed, lambda n: logger(receiver.url, n))
    ref = watch.registry.resolve(watch.spec.name)
    watched = Predictor("bike-watch", lambda: load_from_registry(watch.registry, ref))
    predictors.append(watched)
    srv = LocalServer(predictors, port=free_port(), grpc_port=0, repository_api=True)
    watcher = AliasWatcher(
        watch.registry, watch.spec.name, "production", ref.version, watched.swap, interval=0.1
    ).start()
    srv.start()
    assert srv.grpc_address is not None
    yield Served(srv.url, srv.grpc_address, watch)
    watcher.stop()
    srv.stop()
    for p in predictors:
        if p.shadow:
            p.shadow.close(timeout=1)
        if p.emitter:
            p.emitter.close(timeout=1)


@pytest.fixture
def client(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def grpc_calls(address: str, calls: list[dict]) -> list[dict]:
    """Run calls through tritonclient's gRPC client (tests/serving/oip_grpc.py, a process
    of its own: its protos and kserve's cannot share one)."""
    run = subprocess.run(
        [sys.executable, str(HERE / "oip_grpc.py"), address],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results: list[dict] = json.loads(run.stdout.strip().splitlines()[-1])
    return results


def infer_call(trained: Trained, instances: list[dict], **extra: object) -> dict:
    """A gRPC infer call for grpc_calls: one FP64 or BYTES column per feature."""
    return {
        "op": "infer",
        "model": extra.pop("model", "bike"),
        "columns": {f: [r[f] for r in instances] for f in trained.spec.features},
        "types": {
            f: "FP64" if f in trained.spec.numeric else "BYTES" for f in trained.spec.features
        },
        **extra,
    }


def rows(trained: Trained, n: int) -> list[dict]:
    """Held-out rows as V1 instances (features only, JSON types)."""
    df = trained.test[trained.spec.features].head(n)
    return json.loads(df.to_json(orient="records"))


__all__ = ["Trained", "rows", "VersionRef"]
