"""A fake Kubernetes API on 127.0.0.1 serving InferenceServices: the HTTP boundary the real
``kubernetes`` client talks to (``Configuration(host=fake.host)``).

GET and PATCH ``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices/<name>``;
a PATCH must be a JSON merge patch and is applied (RFC 7386) to the in-memory object. Every
request is recorded with its Content-Type and body. A tiny stand-in for the KServe/Knative
controllers fills ``status`` the way KServe reports it (a new revision per storageUri, ready
after ``ready_after`` reads, traffic split by canaryTrafficPercent), or never makes the new
revision ready (``revisions = "stuck"``), or fails it (``revisions = "failing"``).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content_type: str | None
    body: dict | None


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[Request] = []
        self.revisions = "healthy"  # or "stuck" (never ready) or "failing"
        self.ready_after = 2  # reads before a new revision is ready
        self.on_request: Callable[[Request], None] | None = None  # e.g. snapshot the registry
        self.lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self, method: str) -> None:
                path = urlparse(self.path).path
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                with fake.lock:
                    req = Request(method, path, self.headers.get("Content-Type"), body)
                    fake.requests.append(req)
                    if fake.on_request:
                        fake.on_request(req)
                    code, reply = fake.route(method, path, self.headers.get("Content-Type"), body)
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests look at ------------------------------------------------------------
    def patches(self) -> list[dict]:
        return [r.body for r in self.requests if r.method == "PATCH"]  # type: ignore[misc]

    def isvc(self, name: str, namespace: str = "driftloop") -> dict:
        return self.objects[(namespace, name)]

    def add_isvc(self, name: str, storage_uri: str, namespace: str = "driftloop") -> None:
        """An InferenceService whose first revision is ready and serves all traffic."""
        rev = f"{name}-predictor-00001"
        self.objects[(namespace, name)] = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {
                "predictor": {
                    "model": {
                        "modelFormat": {"name": "driftloop"},
                        "runtime": "driftloop",
                        "storageUri": storage_uri,
                    }
                }
            },
            "status": {
                "conditions": _conditions("True"),
                "components": {
                    "predictor": {
                        "latestCreatedRevision": rev,
                        "latestReadyRevision": rev,
                        "latestRolledoutRevision": rev,
                        "traffic": [{"revisionName": rev, "latestRevision": True, "percent": 100}],
                    }
                },
            },
        }

    # -- the API -----------------------------------------------------------------------
    def route(
        self, method: str, path: str, content_type: str | None, body: dict | None
    ) -> tuple[int, dict]:
        ns, _, name = path.removeprefix(PREFIX).partition("/inferenceservices/")
        if not path.startswith(PREFIX) or not name:
            return 404, _status(404, "NotFound", f"the server could not find {path}")
        obj = self.objects.get((ns, name))
        if obj is None:
            return 404, _status(
                404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found'
            )
        if method == "PATCH":
            if content_type != "application/merge-patch+json":
                return 415, _status(415, "UnsupportedMediaType", f"{content_type}")
            new = merge_patch(obj, body)
            assert isinstance(new, dict)
            if new["spec"] != obj["spec"]:
                new["metadata"]["generation"] += 1
            self._controller_saw_patch(obj, new)
            self.objects[(ns, name)] = obj = new
        else:
            self._controller_tick(obj)
        return 200, obj

    # -- the KServe + Knative controllers, much reduced ---------------------------------
    def _controller_saw_patch(self, old: dict, new: dict) -> None:
        st = new["status"]["components"]["predictor"]
        if new["spec"]["predictor"].get("model") != old["spec"]["predictor"].get("model"):
            n = int(st["latestCreatedRevision"].rsplit("-", 1)[1]) + 1
            st["latestCreatedRevision"] = f"{new['metadata']['name']}-predictor-{n:05d}"
            new["status"]["conditions"] = _conditions("Unknown")
            self._pending[(new["metadata"]["namespace"], new["metadata"]["name"])] = (
                self.ready_after
            )
        self._route_traffic(new)

    def _controller_tick(self, obj: dict) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key not in self._pending:
            return
        if self.revisions == "failing":
            obj["status"]["conditions"] = _conditions(
                "False", "RevisionFailed", "Revision failed: storage-initializer exited 1"
            )
            return
        if self.revisions == "stuck":
            return
        self._pending[key] -= 1
        if self._pending[key] <= 0:
            del self._pending[key]
            st = obj["status"]["components"]["predictor"]
            st["latestReadyRevision"] = st["latestCreatedRevision"]
            obj["status"]["conditions"] = _conditions("True")
            self._route_traffic(obj)

    @staticmethod
    def _route_traffic(obj: dict) -> None:
        """KServe: latest ready revision gets p %, the last 100 % revision the rest."""
        st = obj["status"]["components"]["predictor"]
        p = obj["spec"]["predictor"].get("canaryTrafficPercent", 100)
        ready, rolled = st["latestReadyRevision"], st["latestRolledoutRevision"]
        if ready == rolled or p == 100:
            st["traffic"] = [{"revisionName": ready, "latestRevision": True, "percent": 100}]
            st["latestRolledoutRevision"] = ready
            return
        st["traffic"] = [
            {"revisionName": ready, "latestRevision": True, "percent": p},
            {"revisionName": rolled, "tag": "prev", "latestRevision": False, "percent": 100 - p},
        ]


def _conditions(status: str, reason: str = "", message: str = "") -> list[dict]:
    return [
        {"type": t, "status": status, **({"reason": reason, "message": message} if reason else {})}
        for t in ("PredictorConfigurationReady", "PredictorReady", "Ready")
    ]


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
