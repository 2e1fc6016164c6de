"""A small stand-in of the Kubernetes API: the few endpoints our `k8s_target` role uses.

It serves what `kubernetes.core` (k8s_info, k8s, k8s_scale, k8s_log) and the kubernetes Python client's
discovery ask for: `/version`, `/api`, `/apis`, the `v1` and `apps/v1` resource lists, pods (list with
label selectors, get, log) and Deployments (list, get, patch, replace, and the `scale` subresource).
Changes are instant: scaling a Deployment sets its status to the new count at once, as a rollout that
already finished. Nothing else of Kubernetes is imitated (no controllers, no watches, no auth).

State comes from a YAML or JSON seed, in shorthand or as full objects (see tests/standins/README.md):

    pods:
      - {name: app-1, namespace: staging, labels: {app: release-manager}, phase: Running, ready: true}
    deployments:
      - {name: release-manager, namespace: staging, replicas: 2, selector: {app: release-manager}}

Run it:   python tests/standins/k8s_api.py --state seed.yml --port 0 --port-file port --pid-file pid \
              --kubeconfig kubeconfig --dump state.json
Import it: `with K8sApiStandin(seed) as api: api.write_kubeconfig(path); ...; api.deployment('ns', 'name')`.
`GET /_standin/state` returns the current state, `GET /_standin/requests` the requests served.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

SERVER_VERSION = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.0-standin", "gitCommit": "standin",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
    "compiler": "gc", "platform": "linux/amd64",
}

CORE_RESOURCES = [
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "verbs": ["get", "list"], "shortNames": ["ns"]},
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
     "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
     "verbs": ["create", "get"]},
]

APPS_RESOURCES = [
    {"name": "deployments", "singularName": "deployment", "namespaced": True, "kind": "Deployment",
     "verbs": ["get", "list", "patch", "update"], "shortNames": ["deploy"], "categories": ["all"]},
    {"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
     "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
    {"name": "deployments/status", "singularName": "", "namespaced": True, "kind": "Deployment",
     "verbs": ["get"]},
]

RESOURCE_PATH = re.compile(
    r"^/(?:api/v1|apis/apps/v1)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?"
    r"/(?P<plural>pods|deployments)"
    r"(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>log|scale|status))?$"
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- seed -> full objects ---------------------------------------------------------------------

def _pod_from_shorthand(item: dict) -> dict:
    if "metadata" in item:
        pod = copy.deepcopy(item)
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        return pod
    phase = item.get("phase", "Running")
    ready = bool(item.get("ready", phase == "Running"))
    containers = item.get("containers") or ["app"]
    running = phase == "Running"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": item["name"], "namespace": item.get("namespace", "default"),
            "labels": dict(item.get("labels") or {}), "annotations": dict(item.get("annotations") or {}),
            "uid": str(uuid.uuid4()), "creationTimestamp": item.get("created", "2026-01-01T00:00:00Z"),
        },
        "spec": {"containers": [{"name": c, "image": item.get("image", "release-manager:standin")}
                                for c in containers]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True" if phase != "Pending" else "False"},
                {"type": "ContainersReady", "status": str(ready)},
                {"type": "Ready", "status": str(ready)},
            ],
            "containerStatuses": [
                {"name": c, "ready": ready, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if running
                 else {"waiting": {"reason": "ContainerCreating"}}}
                for c in containers
            ],
        },
        # Not part of a Pod: the text `pods/{name}/log` returns. Stripped from API responses.
        "_log": item.get("log", f"{item['name']}: started\n{item['name']}: serving requests\n"),
    }


def _deployment_from_shorthand(item: dict) -> dict:
    if "metadata" in item:
        dep = copy.deepcopy(item)
        dep.setdefault("apiVersion", "apps/v1")
        dep.setdefault("kind", "Deployment")
        return dep
    replicas = int(item.get("replicas", 1))
    selector = dict(item.get("selector") or {"app": item["name"]})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": item["name"], "namespace": item.get("namespace", "default"),
            "labels": dict(item.get("labels") or selector), "annotations": dict(item.get("annotations") or {}),
            "uid": str(uuid.uuid4()), "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector},
                         "spec": {"containers": [{"name": "app", "image": "release-manager:standin"}]}},
        },
        "status": {},
        # Not part of a Deployment: refuse scaling it up (as an RBAC rule or an admission webhook would),
        # for the "writers still down" path. Stripped from API responses.
        "_refuse_scale_up": bool(item.get("refuse_scale_up")),
    }


def _settle_deployment(dep: dict) -> None:
    """The rollout finished at once: status follows spec."""
    replicas = int(dep["spec"].get("replicas", 1) or 0)
    dep["status"] = {
        "observedGeneration": dep["metadata"].get("generation", 1),
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    if replicas == 0:
        # As the real API server: zero counts are omitted.
        for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            dep["status"].pop(key)


def load_seed(source: str | Path | dict) -> dict:
    """Full-object state from a seed file (YAML or JSON) or a dict."""
    data = copy.deepcopy(source) if isinstance(source, dict) else yaml.safe_load(Path(source).read_text()) or {}
    state = {
        "pods": [_pod_from_shorthand(p) for p in data.get("pods") or []],
        "deployments": [_deployment_from_shorthand(d) for d in data.get("deployments") or []],
    }
    for dep in state["deployments"]:
        if not dep.get("status"):
            _settle_deployment(dep)
    for obj in state["pods"] + state["deployments"]:
        obj["metadata"].setdefault("resourceVersion", "1")
    return state


# --- label selectors and patches --------------------------------------------------------------

def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str, labels: dict) -> bool:
    """Kubernetes label selector syntax: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    labels = labels or {}
    for term in _split_selector(selector or ""):
        set_match = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if set_match:
            key, op, values = set_match.groups()
            allowed = {v.strip() for v in values.split(",")}
            if (op == "in") != (key in labels and labels[key] in allowed):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge: our objects have no keyed lists)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path else []


def json_patch(target: dict, operations: list[dict]) -> dict:
    """RFC 6902: add, replace, remove, test."""
    doc = copy.deepcopy(target)
    for op in operations:
        keys = _pointer(op["path"])
        parent = doc
        for key in keys[:-1]:
            parent = parent[int(key)] if isinstance(parent, list) else parent.setdefault(key, {})
        last = keys[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                parent.pop(index)
            elif kind == "test" and parent[index] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise ValueError(f"cannot replace missing {op['path']}")
            parent[last] = op["value"]
        elif kind == "remove":
            if last not in parent:
                raise ValueError(f"cannot remove missing {op['path']}")
            del parent[last]
        elif kind == "test":
            if parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported json-patch op {kind}")
    return doc


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


# --- the API ----------------------------------------------------------------------------------

class K8sApiStandin:
    """The state and the HTTP server. Thread-safe; usable as a context manager."""

    def __init__(self, seed: str | Path | dict | None = None, *, dump_path: str | Path | None = None):
        self._lock = threading.RLock()
        self._state = load_seed(seed or {})
        self._version = 1
        self.requests: list[dict] = []
        self.dump_path = Path(dump_path) if dump_path else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dump()

    # lifecycle
    def start(self, port: int = 0, host: str = "127.0.0.1") -> K8sApiStandin:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="k8s-api-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> K8sApiStandin:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, namespace: str = "default", context: str = "standin") -> dict:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
            "clusters": [{"name": "standin", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "standin", "user": "standin",
                                                       "namespace": namespace}}],
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default", context: str = "standin") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace, context), sort_keys=False))
        path.chmod(0o600)
        return path

    # state access (for tests)
    @property
    def state(self) -> dict:
        with self._lock:
            return _public(self._state)

    def deployment(self, namespace: str, name: str) -> dict:
        return _public(self._find("deployments", namespace, name))

    def pod(self, namespace: str, name: str) -> dict:
        return _public(self._find("pods", namespace, name))

    # internals
    def _dump(self) -> None:
        if self.dump_path:
            tmp = self.dump_path.with_name(self.dump_path.name + ".tmp")
            tmp.write_text(json.dumps(_public(self._state), indent=2, sort_keys=True))
            tmp.replace(self.dump_path)

    def _find(self, plural: str, namespace: str | None, name: str) -> dict:
        with self._lock:
            for obj in self._state[plural]:
                meta = obj["metadata"]
                if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
                    return obj
        kind = "pods" if plural == "pods" else "deployments.apps"
        raise ApiError(404, "NotFound", f'{kind} "{name}" not found')

    def _bump(self, obj: dict) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def handle(self, method: str, raw_path: str, content_type: str, body: bytes) -> tuple[int, Any, str]:
        """(status, payload, content type) for one request."""
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "content_type": content_type})
        if method == "GET":
            fixed = self._fixed_get(path)
            if fixed is not None:
                return 200, fixed, "application/json"
        match = RESOURCE_PATH.match(path)
        if not match:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        namespace, plural, name, sub = match.group("namespace", "plural", "name", "sub")
        if (plural == "pods") != path.startswith("/api/v1"):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if name is None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {plural} lists here")
            return 200, self._list(plural, namespace, query), "application/json"
        if plural == "pods":
            if method != "GET" or sub not in (None, "log", "status"):
                raise ApiError(405, "MethodNotAllowed", f"{method} {path} is not supported by the stand-in")
            pod = self._find("pods", namespace, name)
            if sub == "log":
                return 200, self._log(pod, query), "text/plain"
            return 200, _public(pod), "application/json"
        return self._deployment(method, namespace, name, sub, content_type, body)

    def _fixed_get(self, path: str) -> Any:
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}
        if path == "/api/v1":
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                    "resources": CORE_RESOURCES}
        if path == "/apis/apps/v1":
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                    "resources": APPS_RESOURCES}
        if path == "/apis/apps":
            return {"kind": "APIGroup", "apiVersion": "v1", "name": "apps",
                    "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}
        if path == "/_standin/state":
            return self.state
        if path == "/_standin/requests":
            with self._lock:
                return list(self.requests)
        return None

    def _list(self, plural: str, namespace: str | None, query: dict) -> dict:
        selector = query.get("labelSelector", "")
        with self._lock:
            items = [_public(o) for o in self._state[plural]
                     if (namespace is None or o["metadata"].get("namespace") == namespace)
                     and label_selector_matches(selector, o["metadata"].get("labels"))]
        api_version, kind = ("v1", "PodList") if plural == "pods" else ("apps/v1", "DeploymentList")
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def _log(self, pod: dict, query: dict) -> str:
        if "container" in query:
            names = [c["name"] for c in pod["spec"].get("containers", [])]
            if query["container"] not in names:
                raise ApiError(400, "BadRequest",
                               f"container {query['container']} is not valid for pod {pod['metadata']['name']}")
        lines = pod.get("_log", "").splitlines(keepends=True)
        if query.get("tailLines"):
            lines = lines[-int(query["tailLines"]):]
        return "".join(lines)

    def _deployment(self, method: str, namespace: str, name: str, sub: str | None,
                    content_type: str, body: bytes) -> tuple[int, Any, str]:
        with self._lock:
            dep = self._find("deployments", namespace, name)
            if method == "GET":
                return 200, _scale_of(dep) if sub == "scale" else _public(dep), "application/json"
            if method not in ("PATCH", "PUT"):
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported by the stand-in")
            try:
                payload = json.loads(body or b"null")
            except ValueError as err:
                raise ApiError(400, "BadRequest", f"body is not JSON: {err}") from err
            current = _scale_of(dep) if sub == "scale" else _public(dep)
            if method == "PUT":
                updated = payload
            elif "json-patch" in content_type:
                try:
                    updated = json_patch(current, payload)
                except (ValueError, KeyError, IndexError) as err:
                    raise ApiError(422, "Invalid", f"json patch failed: {err}") from err
            elif "merge-patch" in content_type:  # merge and strategic-merge
                updated = merge_patch(current, payload)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
            if sub == "scale":
                replicas = (updated.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise ApiError(422, "Invalid", f"spec.replicas must be a non-negative integer, got {replicas!r}")
                if replicas > 0 and dep.get("_refuse_scale_up"):
                    raise ApiError(403, "Forbidden", f'deployments.apps "{name}" is forbidden: scaling up is refused '
                                                     "by the stand-in's refuse_scale_up")
                if replicas != dep["spec"].get("replicas"):
                    dep["spec"]["replicas"] = replicas
                    dep["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
                    _settle_deployment(dep)
                    self._bump(dep)
                    self._dump()
                return 200, _scale_of(dep), "application/json"
            self._apply_update(dep, updated)
            return 200, _public(dep), "application/json"

    def _apply_update(self, dep: dict, updated: dict) -> None:
        before = _public(dep)
        meta = dep["metadata"]
        new_meta = updated.get("metadata") or {}
        for key in ("labels", "annotations"):
            if key in new_meta:
                meta[key] = {k: str(v) for k, v in (new_meta[key] or {}).items()}
        if "spec" in updated and updated["spec"] != dep["spec"]:
            dep["spec"] = updated["spec"]
            meta["generation"] = meta.get("generation", 1) + 1
            _settle_deployment(dep)
        if _public(dep) != before:  # a no-op patch leaves resourceVersion alone, as the real server
            self._bump(dep)
            self._dump()


def _public(obj: Any) -> Any:
    """A copy without the stand-in's private fields (keys starting with '_')."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_public(v) for v in obj]
    return obj


def _scale_of(dep: dict) -> dict:
    meta = dep["metadata"]
    selector = ",".join(f"{k}={v}" for k, v in sorted(dep["spec"]["selector"].get("matchLabels", {}).items()))
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                     "resourceVersion": meta.get("resourceVersion")},
        "spec": {"replicas": dep["spec"].get("replicas", 0)},
        "status": {"replicas": dep["status"].get("replicas", 0), "selector": selector},
    }


class _Handler(BaseHTTPRequestHandler):
    api: K8sApiStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if os.environ.get("K8S_STANDIN_VERBOSE"):
            super().log_message(format, *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            code, payload, ctype = self.api.handle(self.command, self.path, self.headers.get("Content-Type", ""), body)
        except ApiError as err:
            code, payload, ctype = err.code, err.status(), "application/json"
        except Exception as err:  # a stand-in bug should reach the test as a 500, not a hang
            code, payload, ctype = 500, ApiError(500, "InternalError", repr(err)).status(), "application/json"
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code, HTTPStatus(code).phrase)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", required=True, help="seed file (YAML or JSON)")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (see --port-file)")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--pid-file", help="write this process's id here")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at this server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument("--dump", help="write the current state here (JSON) after every change")
    args = parser.parse_args(argv)

    api = K8sApiStandin(args.state, dump_path=args.dump).start(port=args.port)
    if args.kubeconfig:
        api.write_kubeconfig(args.kubeconfig, namespace=args.namespace)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    if args.port_file:
        Path(args.port_file).write_text(f"{api.port}\n")
    print(f"k8s API stand-in on {api.url}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
