"""A fake Kubeflow Pipelines API (v2beta1) on 127.0.0.1: the HTTP boundary kfp.Client
talks to. It keeps pipelines, versions, experiments, runs and recurring runs in memory
and records every request, so tests assert what driftloop asked the API to do."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeKfp:
    def __init__(self) -> None:
        self.pipelines: list[dict] = []
        self.versions: list[dict] = []
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, obj: dict, code: int = 200) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw and raw[:1] == b"{" else {}
                with fake.lock:
                    fake.requests.append((method, url.path, {**query, **body}))
                    self._reply(fake.route(method, url.path, query, body))

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _named(items: list[dict], query: dict) -> list[dict]:
        if "filter" not in query:
            return items
        preds = json.loads(query["filter"])["predicates"]
        want = preds[0].get("stringValue", preds[0].get("string_value"))
        return [i for i in items if i["display_name"] == want]

    def route(self, method: str, path: str, query: dict, body: dict) -> dict:
        p = path.removeprefix("/apis/v2beta1/")
        if p == "healthz":
            return {"multi_user": False}
        if p == "pipelines" and method == "GET":
            return {"pipelines": self._named(self.pipelines, query)}
        if p == "pipelines/upload":
            item = {"pipeline_id": f"p{len(self.pipelines) + 1}", "display_name": query["name"]}
            self.pipelines.append(item)
            return item
        if p == "pipelines/upload_version":
            item = {
                "pipeline_version_id": f"pv{len(self.versions) + 1}",
                "pipeline_id": query["pipelineid"],
                "display_name": query["name"],
            }
            self.versions.append(item)
            return item
        if p.startswith("pipelines/") and p.endswith("/versions"):
            pid = p.split("/")[1]
            mine = [v for v in self.versions if v["pipeline_id"] == pid]
            return {"pipeline_versions": self._named(mine, query)}
        if p == "experiments" and method == "GET":
            return {"experiments": self._named(self.experiments, query)}
        if p == "experiments":
            item = {"experiment_id": f"e{len(self.experiments) + 1}", **body}
            self.experiments.append(item)
            return item
        if p == "runs" and method == "GET":
            return {"runs": self._named(self.runs, query)}
        if p == "runs":
            item = {"run_id": f"r{len(self.runs) + 1}", "state": "RUNNING", **body}
            self.runs.append(item)
            return item
        if p.startswith("runs/"):
            return next(r for r in self.runs if r["run_id"] == p.split("/")[1])
        if p == "recurringruns":
            item = {"recurring_run_id": f"rr{len(self.recurring) + 1}", **body}
            self.recurring.append(item)
            return item
        raise AssertionError(f"fake KFP: unexpected {method} {path}")
