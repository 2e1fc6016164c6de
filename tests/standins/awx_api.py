"""A small stand-in of the AWX REST API (v2): what the awx.awx modules and our approval lookup call.

It serves what `awx.awx` (24.x, `plugins/module_utils/controller_api.py`) asks for: token login
(`POST /api/v2/tokens/` with basic auth, `DELETE` at logout) or a bearer token, the product headers
it checks the version with, list views filtered by field (`?name=…`, `?or__id=…&or__name=…`, paged
with `next`), create (`POST`), update (`PATCH`), delete, the related endpoints the modules use
(`survey_spec/`, association lists such as `credentials/`, `instance_groups/`,
`notification_templates_error/`, `success_nodes/` with `{"id": N}` / `{"id": N, "disassociate": true}`,
`workflow_nodes/`, `create_approval_template/`, `schedules/`, `project_updates/`), the
`unified_job_templates` view (job templates, workflows, projects, inventory sources and approval
templates share one id space, as in AWX) and, for `roles/preflight/tasks/awx_approval.yml`, the
workflow job side: `workflow_jobs/{id}/workflow_nodes/`, `workflow_approvals/{id}/` (with
`approve/` and `deny/`).

It checks what AWX would refuse, so a wrong configuration fails here too: unknown references, duplicate
names, a playbook or inventory file that is not in the project, survey specs AWX rejects, a job slice count
that is not a whole number of at least 0 (read as AWX reads it: "3" and 3.0 are 3), prompts
(inventory, credentials, extra data) given to a node or schedule whose template does not ask for them,
two credentials of one type on a template, workflow edges across workflows or in a cycle, an rrule
without DTSTART. Secret credential inputs read back as `$encrypted$`. Jobs do not run: a project update
succeeds at once; workflow jobs and approvals exist only when a test adds them (`add_workflow_job`).

Import it: `with AwxApiStandin(project_root=ROOT, tokens={"t0ken": "admin"}) as api: ...; api.state()`.
Run it:    python tests/standins/awx_api.py --port 0 --port-file port --token t0ken --project-root .
`GET /_standin/state` returns everything it holds (as `state()`), `GET /_standin/requests` the requests.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import signal
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from dateutil import rrule as dateutil_rrule

AWX_VERSION = "24.6.1"
ENCRYPTED = "$encrypted$"

TYPES = {
    "organizations": "organization",
    "users": "user",
    "credential_types": "credential_type",
    "credentials": "credential",
    "execution_environments": "execution_environment",
    "instance_groups": "instance_group",
    "instances": "instance",
    "labels": "label",
    "notification_templates": "notification_template",
    "projects": "project",
    "project_updates": "project_update",
    "inventories": "inventory",
    "inventory_sources": "inventory_source",
    "job_templates": "job_template",
    "workflow_job_templates": "workflow_job_template",
    "workflow_job_template_nodes": "workflow_job_template_node",
    "workflow_approval_templates": "workflow_approval_template",
    "schedules": "schedule",
    "workflow_jobs": "workflow_job",
    "workflow_job_nodes": "workflow_job_node",
    "workflow_approvals": "workflow_approval",
    "jobs": "job",
}
# Unified job templates share one id space in AWX (a node or schedule points at any of them by id);
# so do unified jobs.
UJT_COLLECTIONS = ("job_templates", "workflow_job_templates", "projects", "inventory_sources",
                   "workflow_approval_templates")
UNIFIED_JOB_COLLECTIONS = ("project_updates", "workflow_jobs", "workflow_approvals", "jobs")
UJT_KIND = {"job_templates": "job", "workflow_job_templates": "workflow_job", "projects": "project_update",
            "inventory_sources": "inventory_update", "workflow_approval_templates": "workflow_approval"}

NOTIFY = ("notification_templates_started", "notification_templates_success", "notification_templates_error")
ASSOCIATIONS = {
    "organizations": ("instance_groups", "galaxy_credentials", *NOTIFY, "notification_templates_approvals"),
    "projects": NOTIFY,
    "inventories": ("instance_groups", "input_inventories"),
    "inventory_sources": NOTIFY,
    "job_templates": ("credentials", "instance_groups", "labels", *NOTIFY),
    "workflow_job_templates": ("labels", *NOTIFY, "notification_templates_approvals"),
    "workflow_job_template_nodes": ("success_nodes", "failure_nodes", "always_nodes", "credentials",
                                    "instance_groups", "labels"),
    "schedules": ("credentials", "instance_groups", "labels"),
    "instance_groups": ("instances",),
}
ASSOCIATION_TARGET = {
    "credentials": "credentials", "galaxy_credentials": "credentials", "instance_groups": "instance_groups",
    "labels": "labels", "instances": "instances", "input_inventories": "inventories",
    "success_nodes": "workflow_job_template_nodes", "failure_nodes": "workflow_job_template_nodes",
    "always_nodes": "workflow_job_template_nodes",
    **{name: "notification_templates" for name in (*NOTIFY, "notification_templates_approvals")},
}
EDGES = ("success_nodes", "failure_nodes", "always_nodes")
ORDERED_ASSOCIATIONS = ("instance_groups", "galaxy_credentials")

# Fields that point at another object, and where it lives.
REFERENCES = {
    "organization": "organizations", "inventory": "inventories", "project": "projects",
    "credential_type": "credential_types", "credential": "credentials", "webhook_credential": "credentials",
    "signature_validation_credential": "credentials", "execution_environment": "execution_environments",
    "default_environment": "execution_environments", "source_project": "projects",
    "workflow_job_template": "workflow_job_templates",
}

# Names that must be unique, and within what.
UNIQUE = {
    "organizations": ("name",), "credential_types": ("name", "kind"),
    "credentials": ("name", "organization", "credential_type"), "execution_environments": ("name",),
    "instance_groups": ("name",), "labels": ("name", "organization"),
    "notification_templates": ("name", "organization"), "projects": ("name", "organization"),
    "inventories": ("name", "organization"), "inventory_sources": ("name", "inventory"),
    "job_templates": ("name", "organization"), "workflow_job_templates": ("name", "organization"),
    "workflow_job_template_nodes": ("identifier", "workflow_job_template"),
    "schedules": ("name", "unified_job_template"),
}

NOTIFICATION_TYPES = {
    "awssns", "email", "grafana", "irc", "mattermost", "pagerduty", "rocketchat", "slack", "twilio", "webhook",
}
# Configuration fields AWX requires for a notification type (those without a default).
NOTIFICATION_REQUIRED = {
    "webhook": ("url", "headers"),
    "email": ("host", "port", "sender", "recipients", "timeout"),
    "slack": ("token", "channels"),
}
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}

# What a node or schedule may set only when its job template prompts for it.
PROMPTS = {
    "inventory": "ask_inventory_on_launch", "limit": "ask_limit_on_launch", "job_type": "ask_job_type_on_launch",
    "verbosity": "ask_verbosity_on_launch", "scm_branch": "ask_scm_branch_on_launch",
    "job_tags": "ask_tags_on_launch", "skip_tags": "ask_skip_tags_on_launch", "diff_mode": "ask_diff_mode_on_launch",
    "forks": "ask_forks_on_launch", "timeout": "ask_timeout_on_launch",
    "execution_environment": "ask_execution_environment_on_launch",
}
PROMPT_ASSOCIATIONS = {"credentials": "ask_credential_on_launch", "instance_groups": "ask_instance_groups_on_launch",
                       "labels": "ask_labels_on_launch"}


def _field(key: str, label: str, secret: bool = False, kind: str = "string") -> dict:
    field = {"id": key, "label": label, "type": kind}
    if secret:
        field["secret"] = True
    return field


MANAGED_CREDENTIAL_TYPES = [
    {"name": "Machine", "kind": "ssh", "namespace": "ssh",
     "inputs": {"fields": [_field("username", "Username"), _field("password", "Password", True),
                           _field("ssh_key_data", "SSH Private Key", True)]}},
    {"name": "Source Control", "kind": "scm", "namespace": "scm",
     "inputs": {"fields": [_field("username", "Username"), _field("password", "Password", True),
                           _field("ssh_key_data", "SCM Private Key", True),
                           _field("ssh_key_unlock", "Private Key Passphrase", True)]}},
    {"name": "Vault", "kind": "vault", "namespace": "vault",
     "inputs": {"fields": [_field("vault_password", "Vault Password", True), _field("vault_id", "Vault Identifier")],
                "required": ["vault_password"]}},
    {"name": "Red Hat Ansible Automation Platform", "kind": "cloud", "namespace": "controller",
     "inputs": {"fields": [_field("host", "Red Hat Ansible Automation Platform"), _field("username", "Username"),
                           _field("password", "Password", True), _field("oauth_token", "OAuth Token", True),
                           _field("verify_ssl", "Verify SSL", kind="boolean")],
                "required": ["host"]}},
    {"name": "OpenShift or Kubernetes API Bearer Token", "kind": "kubernetes", "namespace": "kubernetes_bearer_token",
     "inputs": {"fields": [_field("host", "OpenShift or Kubernetes API Endpoint"),
                           _field("bearer_token", "API authentication bearer token", True),
                           _field("verify_ssl", "Verify SSL", kind="boolean"),
                           _field("ssl_ca_cert", "Certificate Authority data", True)],
                "required": ["host", "bearer_token"]}},
    {"name": "Container Registry", "kind": "registry", "namespace": "registry",
     "inputs": {"fields": [_field("host", "Authentication URL"), _field("username", "Username"),
                           _field("password", "Password or Token", True),
                           _field("verify_ssl", "Verify SSL", kind="boolean")],
                "required": ["host"]}},
]

DEFAULTS = {
    "organizations": {"description": "", "max_hosts": 0, "default_environment": None},
    "credentials": {"description": "", "organization": None, "inputs": {}},
    "credential_types": {"description": "", "kind": "cloud", "managed": False, "inputs": {}, "injectors": {}},
    "execution_environments": {"description": "", "organization": None, "credential": None, "pull": ""},
    "instance_groups": {"is_container_group": False, "credential": None, "pod_spec_override": "",
                        "policy_instance_percentage": 0, "policy_instance_minimum": 0, "max_concurrent_jobs": 0,
                        "max_forks": 0, "policy_instance_list": []},
    "notification_templates": {"description": "", "messages": None, "notification_configuration": {}},
    "projects": {"description": "", "scm_type": "", "scm_url": "", "scm_branch": "", "scm_refspec": "",
                 "scm_clean": False, "scm_delete_on_update": False, "scm_track_submodules": False,
                 "scm_update_on_launch": False, "scm_update_cache_timeout": 0, "allow_override": False,
                 "timeout": 0, "credential": None, "default_environment": None, "local_path": "",
                 "scm_revision": "", "status": "never updated"},
    "inventories": {"description": "", "kind": "", "host_filter": None, "variables": "",
                    "prevent_instance_group_fallback": False},
    "inventory_sources": {"description": "", "source_path": "", "source_vars": "", "credential": None,
                          "overwrite": False, "overwrite_vars": False, "update_on_launch": False,
                          "update_cache_timeout": 0, "timeout": 0, "verbosity": 1, "scm_branch": ""},
    "job_templates": {"description": "", "job_type": "run", "inventory": None, "limit": "", "forks": 0,
                      "verbosity": 0, "extra_vars": "", "job_tags": "", "skip_tags": "", "timeout": 0,
                      "survey_enabled": False, "become_enabled": False, "diff_mode": False,
                      "allow_simultaneous": False, "execution_environment": None, "scm_branch": "",
                      "prevent_instance_group_fallback": False, "job_slice_count": 1,
                      **{ask: False for ask in (*PROMPTS.values(), *PROMPT_ASSOCIATIONS.values(),
                                                "ask_variables_on_launch", "ask_job_slice_count_on_launch")}},
    "workflow_job_templates": {"description": "", "extra_vars": "", "survey_enabled": False,
                               "allow_simultaneous": False, "inventory": None, "limit": None, "scm_branch": None,
                               "ask_variables_on_launch": False, "ask_inventory_on_launch": False,
                               "ask_limit_on_launch": False, "ask_scm_branch_on_launch": False},
    "workflow_job_template_nodes": {"unified_job_template": None, "extra_data": {}, "inventory": None,
                                    "all_parents_must_converge": False, "identifier": ""},
    "workflow_approval_templates": {"description": "", "timeout": 0},
    "schedules": {"description": "", "enabled": True, "extra_data": {}, "inventory": None},
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, {field: [message]})


def _slice_count(value: Any) -> int:
    """job_slice_count as AWX reads it (a PositiveIntegerField through DRF's IntegerField): 3, "3" or 3.0 is 3;
    0 is accepted (no slicing, as 1); negative, fractional, boolean, null or non-numeric values are refused."""
    if value is None:
        raise _bad("job_slice_count", "This field may not be null.")
    text = re.sub(r"\.0*\s*$", "", str(value))
    if isinstance(value, bool) or not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        raise _bad("job_slice_count", "A valid integer is required.")
    number = int(text)
    if number < 0:
        raise _bad("job_slice_count", "Ensure this value is greater than or equal to 0.")
    if number > 2147483647:
        raise _bad("job_slice_count", "Ensure this value is less than or equal to 2147483647.")
    return number


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    if value is None:
        return wanted.lower() in ("", "none", "null")
    return str(value) == wanted


def project_playbooks(root: Path) -> list[str]:
    """The playbooks AWX would offer for a project checked out at root (files with plays in them)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in
                             ("roles", "molecule", "tests", "node_modules", "__pycache__", "reports",
                              "group_vars", "host_vars", "tasks", "templates", "files", "defaults"))
        for name in sorted(filenames):
            if not name.endswith((".yml", ".yaml")):
                continue
            path = Path(dirpath) / name
            text = path.read_text(errors="replace")
            if re.search(r"^\s*-?\s*(hosts|import_playbook|ansible\.builtin\.import_playbook):", text, re.M):
                found.append(str(path.relative_to(root)))
    return found


class AwxApiStandin:
    """The state and the HTTP server. Thread-safe; usable as a context manager."""

    def __init__(self, *, project_root: str | Path | None = None, users: dict[str, str] | None = None,
                 tokens: dict[str, str] | None = None, dump_path: str | Path | None = None):
        self._lock = threading.RLock()
        self.project_root = Path(project_root) if project_root else None
        self._playbooks = project_playbooks(self.project_root) if self.project_root else None
        self.users = dict(users or {"admin": "password"})
        self.tokens = dict(tokens or {})  # token -> username
        self.dump_path = Path(dump_path) if dump_path else None
        self.requests: list[dict] = []
        self._objects: dict[str, dict[int, dict]] = {name: {} for name in TYPES}
        self._assoc: dict[tuple[str, int, str], list[int]] = {}
        self._surveys: dict[tuple[str, int], dict] = {}
        self._counters: dict[str, int] = {}
        self._token_ids: dict[int, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._seed()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, port: int = 0, host: str = "127.0.0.1") -> AwxApiStandin:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="awx-api-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AwxApiStandin:
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

    # --- ids and seed ---------------------------------------------------------------------------
    def _next_id(self, collection: str) -> int:
        space = "ujt" if collection in UJT_COLLECTIONS else "uj" if collection in UNIFIED_JOB_COLLECTIONS \
            else collection
        self._counters[space] = self._counters.get(space, 0) + 1
        return self._counters[space]

    def _insert(self, collection: str, fields: dict) -> dict:
        obj = {**copy.deepcopy(DEFAULTS.get(collection, {})), **copy.deepcopy(fields)}
        obj["id"] = self._next_id(collection)
        obj["created"] = obj["modified"] = _now()
        self._objects[collection][obj["id"]] = obj
        return obj

    def _seed(self) -> None:
        for username in self.users:
            self._insert("users", {"username": username, "is_superuser": True, "first_name": "", "last_name": ""})
        self._insert("organizations", {"name": "Default", "description": "The default organization"})
        for ctype in MANAGED_CREDENTIAL_TYPES:
            self._insert("credential_types", {**ctype, "managed": True, "injectors": {}})
        self._insert("instance_groups", {"name": "default"})
        self._insert("execution_environments", {"name": "AWX EE (latest)", "image": "quay.io/ansible/awx-ee:latest",
                                                "pull": "", "managed": False})

    # --- lookups ---------------------------------------------------------------------------------
    def _get(self, collection: str, obj_id: int) -> dict:
        try:
            return self._objects[collection][int(obj_id)]
        except (KeyError, ValueError):
            raise ApiError(404, {"detail": "Not found."}) from None

    def _ujt(self, obj_id: int) -> tuple[str, dict] | None:
        for collection in UJT_COLLECTIONS:
            if obj_id in self._objects[collection]:
                return collection, self._objects[collection][obj_id]
        return None

    def find(self, collection: str, **fields) -> list[dict]:
        """Stored objects whose fields equal the given values (for tests)."""
        with self._lock:
            return [self.render(collection, o) for o in self._objects[collection].values()
                    if all(o.get(k) == v for k, v in fields.items())]

    def one(self, collection: str, **fields) -> dict:
        found = self.find(collection, **fields)
        assert len(found) == 1, f"{collection} {fields}: {len(found)} found"
        return found[0]

    # --- rendering --------------------------------------------------------------------------------
    def _url(self, collection: str, obj_id: int) -> str:
        return f"/api/v2/{collection}/{obj_id}/"

    def _secret_fields(self, credential_type_id: int | None) -> set[str]:
        ctype = self._objects["credential_types"].get(credential_type_id or -1)
        fields = (ctype or {}).get("inputs", {}).get("fields", [])
        return {f["id"] for f in fields if f.get("secret")}

    def render(self, collection: str, obj: dict) -> dict:
        out = {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
        out["type"] = TYPES[collection]
        url = out["url"] = self._url(collection, obj["id"])
        related: dict[str, str] = {name: f"{url}{name}/" for name in ASSOCIATIONS.get(collection, ())}
        summary: dict[str, Any] = {}
        for field, target in REFERENCES.items():
            ref = obj.get(field)
            if isinstance(ref, int) and ref in self._objects[target]:
                related[field] = self._url(target, ref)
                ref_obj = self._objects[target][ref]
                summary[field] = {"id": ref, "name": ref_obj.get("name", ref_obj.get("identifier"))}
        if collection in ("job_templates", "workflow_job_templates"):
            related["survey_spec"] = f"{url}survey_spec/"
        if collection in UJT_COLLECTIONS:
            related["schedules"] = f"{url}schedules/"
            related["copy"] = f"{url}copy/"
        if collection in ("workflow_job_templates", "workflow_jobs"):
            related["workflow_nodes"] = f"{url}workflow_nodes/"
        if collection in ("projects", "inventory_sources"):
            related["update"] = f"{url}update/"
        if collection == "projects":
            related["project_updates"] = f"{url}project_updates/"
            related["playbooks"] = f"{url}playbooks/"
            if obj.get("_current_update"):
                update = self._objects["project_updates"][obj["_current_update"]]
                summary["current_update"] = {"id": update["id"], "status": update["status"], "failed": False}
                summary["last_update"] = summary["current_update"]
        if collection == "credentials":
            secrets = self._secret_fields(obj.get("credential_type"))
            out["inputs"] = {k: (ENCRYPTED if k in secrets and v not in ("", None) else v)
                             for k, v in obj.get("inputs", {}).items()}
        if collection == "notification_templates":
            config = out.get("notification_configuration") or {}
            for key in ("password", "token", "account_token", "service_key"):
                if config.get(key):
                    config[key] = ENCRYPTED
        if collection in ("workflow_job_template_nodes", "schedules") and obj.get("unified_job_template"):
            found = self._ujt(obj["unified_job_template"])
            if found:
                ujt_collection, ujt = found
                related["unified_job_template"] = self._url(ujt_collection, ujt["id"])
                summary["unified_job_template"] = {"id": ujt["id"], "name": ujt["name"],
                                                   "unified_job_type": UJT_KIND[ujt_collection]}
        if collection == "workflow_job_template_nodes":
            related["create_approval_template"] = f"{url}create_approval_template/"
            for edge in EDGES:
                out[edge] = list(self._assoc.get((collection, obj["id"], edge), []))
        if collection == "workflow_job_nodes" and obj.get("job"):
            job_collection = obj["_job_collection"]
            job = self._objects[job_collection][obj["job"]]
            related["job"] = self._url(job_collection, job["id"])
            summary["job"] = {"id": job["id"], "name": job["name"], "description": job.get("description", ""),
                              "status": job["status"], "failed": job["status"] in ("failed", "error"),
                              "elapsed": 0.0, "type": TYPES[job_collection]}
        if collection == "workflow_approvals":
            approver = obj.get("_approver")
            if approver:
                user = next(u for u in self._objects["users"].values() if u["username"] == approver)
                summary["approved_or_denied_by"] = {"id": user["id"], "username": user["username"],
                                                    "first_name": "", "last_name": ""}
            summary["source_workflow_job"] = {"id": obj["_workflow_job"], "name": obj.get("_workflow_name", "")}
        if collection == "schedules":
            out.update(self._schedule_times(obj.get("rrule", "")))
        out["related"] = related
        out["summary_fields"] = summary
        return out

    def state(self) -> dict:
        """Everything the stand-in holds: objects as the API shows them, plus their associations and surveys."""
        with self._lock:
            result: dict[str, list] = {}
            for collection, objects in self._objects.items():
                rendered = []
                for obj in objects.values():
                    item = self.render(collection, obj)
                    item["associations"] = {name: list(self._assoc.get((collection, obj["id"], name), []))
                                            for name in ASSOCIATIONS.get(collection, ())}
                    if (collection, obj["id"]) in self._surveys:
                        item["survey_spec"] = copy.deepcopy(self._surveys[(collection, obj["id"])])
                    rendered.append(item)
                result[collection] = rendered
            return result

    def _dump(self) -> None:
        if self.dump_path:
            self.dump_path.write_text(json.dumps(self.state(), indent=2, sort_keys=True))

    # --- workflow jobs (for the approval lookup) ------------------------------------------------------
    def add_workflow_job(self, name: str = "release-migration", approvals: list[dict] | None = None,
                         artifacts: dict | None = None) -> int:
        """A workflow job that ran a job node (staging's migration, which handed on ``artifacts`` with
        set_stats) and the given approval nodes.

        approvals: [{"name": "approve-production", "status": "pending"|"successful"|"failed",
                     "approver": "carol", "timed_out": False}, ...]. Returns the workflow job id.
        """
        with self._lock:
            wf_job = self._insert("workflow_jobs", {"name": name, "status": "running", "failed": False})
            job = self._insert("jobs", {"name": "migrate-staging", "status": "successful",
                                        "artifacts": dict(artifacts or {})})
            self._insert("workflow_job_nodes", {"workflow_job": wf_job["id"], "job": job["id"],
                                                "_job_collection": "jobs", "identifier": "staging-migrate"})
            for approval in approvals or []:
                self.add_approval(wf_job["id"], **approval)
            return wf_job["id"]

    def add_approval(self, workflow_job: int, name: str = "approve-production", status: str = "pending",
                     approver: str | None = None, timed_out: bool = False) -> int:
        with self._lock:
            if approver and not any(u["username"] == approver for u in self._objects["users"].values()):
                self._insert("users", {"username": approver, "is_superuser": False, "first_name": "", "last_name": ""})
            wf = self._get("workflow_jobs", workflow_job)
            approval = self._insert("workflow_approvals", {
                "name": name, "description": "", "status": status, "failed": status == "failed",
                "timed_out": timed_out, "_approver": approver, "_workflow_job": workflow_job,
                "_workflow_name": wf["name"]})
            self._insert("workflow_job_nodes", {"workflow_job": workflow_job, "job": approval["id"],
                                                "_job_collection": "workflow_approvals", "identifier": name})
            return approval["id"]

    # --- request handling ---------------------------------------------------------------------------------
    def authenticate(self, headers) -> str | None:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.tokens.get(auth[7:].strip())
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None
            return user if self.users.get(user) == password else None
        return None

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, user: str | None):
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": {k: v[-1] for k, v in query.items()},
                                  "user": user})
            if path.startswith("/_standin/"):
                return 200, self.state() if path == "/_standin/state/" else list(self.requests)
            if path in ("/api/", "/api/v2/", "/api/v2/ping/"):
                return 200, self._root(path)
            if user is None:
                raise ApiError(401, {"detail": "Authentication credentials were not provided."})
            result = self._route(method, path, query, body, user)
            if method != "GET":
                self._dump()
            return result

    def _root(self, path: str) -> dict:
        if path == "/api/":
            return {"description": "AWX REST API", "current_version": "/api/v2/",
                    "available_versions": {"v2": "/api/v2/"}}
        if path == "/api/v2/ping/":
            return {"ha": False, "version": AWX_VERSION, "active_node": "awx-standin", "install_uuid": "standin"}
        listing = {name: f"/api/v2/{name}/" for name in (*TYPES, "unified_job_templates")}
        return listing | {"ping": "/api/v2/ping/", "me": "/api/v2/me/"}

    def _route(self, method: str, path: str, query: dict, body: Any, user: str):
        parts = [p for p in path.split("/") if p][2:]  # drop "api", "v2"
        if parts == ["me"]:
            users = [self.render("users", u) for u in self._objects["users"].values() if u["username"] == user]
            return 200, {"count": len(users), "next": None, "previous": None, "results": users}
        if parts == ["config"]:
            return 200, {"version": AWX_VERSION, "license_info": {}}
        if parts[:1] == ["tokens"]:
            return self._tokens(method, parts, user)
        if parts == ["unified_job_templates"] and method == "GET":
            items = [(c, o) for c in UJT_COLLECTIONS for o in self._objects[c].values()]
            return 200, self._page(path, query, items)
        if not parts or parts[0] not in TYPES:
            raise ApiError(404, {"detail": "Not found."})
        collection = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return 200, self._page(path, query, [(collection, o) for o in self._objects[collection].values()])
            if method == "POST":
                return 201, self.render(collection, self._create(collection, body or {}))
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        obj = self._get(collection, parts[1])
        if len(parts) == 2:
            if method == "GET":
                return 200, self.render(collection, obj)
            if method in ("PATCH", "PUT"):
                return 200, self.render(collection, self._update(collection, obj, body or {}))
            if method == "DELETE":
                self._delete(collection, obj)
                return 204, None
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        return self._sub(method, collection, obj, parts[2], path, query, body, user)

    def _tokens(self, method: str, parts: list[str], user: str):
        if method == "POST" and len(parts) == 1:
            token_id = self._counters["tokens"] = self._counters.get("tokens", 0) + 1
            token = hashlib.sha256(f"{user}-{token_id}-{id(self)}".encode()).hexdigest()[:30]
            self.tokens[token] = user
            self._token_ids[token_id] = token
            return 201, {"id": token_id, "token": token, "type": "o_auth2_access_token", "scope": "write"}
        if method == "DELETE" and len(parts) == 2 and int(parts[1]) in self._token_ids:
            self.tokens.pop(self._token_ids.pop(int(parts[1])), None)
            return 204, None
        raise ApiError(404, {"detail": "Not found."})

    def _page(self, path: str, query: dict, items: list[tuple[str, dict]]) -> dict:
        flat = {k: v[-1] for k, v in query.items()}
        page = int(flat.pop("page", 1))
        size = int(flat.pop("page_size", 25))
        flat.pop("order_by", None)
        either = {k[4:]: v for k, v in flat.items() if k.startswith("or__")}
        exact = {k: v for k, v in flat.items() if not k.startswith("or__")}
        rendered = [self.render(c, o) for c, o in items]
        matched = [r for r in rendered
                   if all(_matches(r.get(k), v) for k, v in exact.items())
                   and (not either or any(_matches(r.get(k), v) for k, v in either.items()))]
        matched.sort(key=lambda r: r["id"])
        start = (page - 1) * size
        following = None
        if start + size < len(matched):
            following = f"{path}?{urlencode({**{k: v[-1] for k, v in query.items()}, 'page': page + 1})}"
        return {"count": len(matched), "next": following, "previous": None, "results": matched[start:start + size]}

    # --- create / update / delete ------------------------------------------------------------------------
    def _create(self, collection: str, body: dict) -> dict:
        fields = {k: v for k, v in body.items() if k not in ("id", "url", "related", "summary_fields", "type")}
        if collection == "job_templates" and "job_slice_count" in fields:  # stored as the integer AWX reads
            fields["job_slice_count"] = _slice_count(fields["job_slice_count"])
        candidate = {**copy.deepcopy(DEFAULTS.get(collection, {})), **fields}
        self._validate(collection, candidate, None)
        obj = self._insert(collection, fields)
        self._after_save(collection, obj, created=True)
        return obj

    def _update(self, collection: str, obj: dict, body: dict) -> dict:
        fields = {k: v for k, v in body.items() if k not in ("id", "url", "related", "summary_fields", "type")}
        if collection == "job_templates" and "job_slice_count" in fields:
            fields["job_slice_count"] = _slice_count(fields["job_slice_count"])
        if collection == "credentials" and "inputs" in fields:
            # As AWX: `$encrypted$` sent back keeps the stored secret.
            old = obj.get("inputs", {})
            fields["inputs"] = {k: (old.get(k) if v == ENCRYPTED else v) for k, v in fields["inputs"].items()}
        candidate = {**obj, **fields}
        self._validate(collection, candidate, obj["id"])
        obj.update(fields)
        obj["modified"] = _now()
        self._after_save(collection, obj, created=False)
        return obj

    def _delete(self, collection: str, obj: dict) -> None:
        del self._objects[collection][obj["id"]]
        for key in [k for k in self._assoc if k[:2] == (collection, obj["id"])]:
            del self._assoc[key]
        for key, ids in self._assoc.items():
            if ASSOCIATION_TARGET.get(key[2]) == collection and obj["id"] in ids:
                ids.remove(obj["id"])
        if collection == "workflow_job_templates":
            for node in [n for n in self._objects["workflow_job_template_nodes"].values()
                         if n["workflow_job_template"] == obj["id"]]:
                self._delete("workflow_job_template_nodes", node)

    def _after_save(self, collection: str, obj: dict, created: bool) -> None:
        if collection == "projects" and obj.get("scm_type"):
            # The update runs and succeeds at once.
            revision = hashlib.sha256(f"{obj.get('scm_url')}@{obj.get('scm_branch')}".encode()).hexdigest()[:40]
            update = self._insert("project_updates", {"name": obj["name"], "status": "successful", "failed": False,
                                                      "finished": _now(), "project": obj["id"],
                                                      "scm_revision": revision, "event_processing_finished": True})
            obj["_current_update"] = update["id"]
            obj["scm_revision"] = revision
            obj["status"] = "successful"

    # --- validation --------------------------------------------------------------------------------------------
    def _validate(self, collection: str, obj: dict, own_id: int | None) -> None:
        name_field = "identifier" if collection == "workflow_job_template_nodes" else \
            "username" if collection == "users" else "name"
        if collection not in ("workflow_job_template_nodes",) and not obj.get(name_field):
            raise _bad(name_field, "This field is required.")
        for field, target in REFERENCES.items():
            ref = obj.get(field)
            if ref in (None, ""):
                continue
            if not isinstance(ref, int) or ref not in self._objects[target]:
                raise _bad(field, f'Invalid pk "{ref}" - object does not exist.')
        if collection in UNIQUE:
            keys = UNIQUE[collection]
            for other in self._objects[collection].values():
                if other["id"] != own_id and all(other.get(k) == obj.get(k) for k in keys):
                    message = f"{TYPES[collection]} with this {', '.join(keys)} already exists."
                    raise ApiError(400, {"__all__": [message]})
        check = getattr(self, f"_validate_{collection}", None)
        if check:
            check(obj)

    def _validate_credentials(self, obj: dict) -> None:
        ctype = self._objects["credential_types"].get(obj.get("credential_type"))
        if ctype is None:
            raise _bad("credential_type", "This field is required.")
        fields = {f["id"] for f in ctype.get("inputs", {}).get("fields", [])}
        inputs = obj.get("inputs") or {}
        unknown = sorted(set(inputs) - fields)
        if unknown:
            raise ApiError(400, {"inputs": {k: [f"'{k}' is not a field of {ctype['name']}"] for k in unknown}})
        missing = [k for k in ctype.get("inputs", {}).get("required", []) if inputs.get(k) in (None, "")]
        if missing:
            raise ApiError(400, {"inputs": {k: ["required for " + ctype["name"]] for k in missing}})

    def _validate_credential_types(self, obj: dict) -> None:
        if obj.get("kind") not in ("cloud", "net"):
            raise _bad("kind", "Must be 'cloud' or 'net', not " + str(obj.get("kind")))
        ids = set()
        for field in obj.get("inputs", {}).get("fields", []):
            if not {"id", "label"} <= set(field):
                raise _bad("inputs", f"every field needs an id and a label: {field}")
            ids.add(field["id"])
        for injector_kind, templates in (obj.get("injectors") or {}).items():
            if injector_kind not in ("env", "extra_vars", "file"):
                raise _bad("injectors", f"unknown injector {injector_kind}")
            for template in templates.values():
                for used in re.findall(r"{{\s*(\w+)", str(template)):
                    if used not in ids and not used.startswith("tower") and used != "awx":
                        raise _bad("injectors", f"{used} is not an input of this credential type")

    def _validate_execution_environments(self, obj: dict) -> None:
        if not obj.get("image"):
            raise _bad("image", "This field is required.")

    def _validate_instance_groups(self, obj: dict) -> None:
        if obj.get("pod_spec_override") and not obj.get("is_container_group"):
            raise _bad("pod_spec_override", "Only container groups can have a pod spec.")

    def _validate_notification_templates(self, obj: dict) -> None:
        kind = obj.get("notification_type")
        if kind not in NOTIFICATION_TYPES:
            raise _bad("notification_type", f'"{kind}" is not a valid choice.')
        config = obj.get("notification_configuration") or {}
        missing = [k for k in NOTIFICATION_REQUIRED.get(kind, ()) if k not in config]
        if missing:
            raise _bad("notification_configuration",
                       f"Missing required fields for Notification Configuration: {missing}.")
        if kind == "webhook" and not str(config.get("url", "")).startswith(("http://", "https://")):
            raise _bad("notification_configuration", "url must be an http(s) URL")

    def _validate_projects(self, obj: dict) -> None:
        if obj.get("scm_type") not in ("", "git", "svn", "insights", "archive"):
            raise _bad("scm_type", "not a valid choice")
        if obj.get("scm_type") and not obj.get("scm_url"):
            raise _bad("scm_url", "SCM URL is required.")
        if not obj.get("organization"):
            raise _bad("organization", "This field is required.")

    def _validate_inventories(self, obj: dict) -> None:
        if not obj.get("organization"):
            raise _bad("organization", "This field is required.")

    def _validate_inventory_sources(self, obj: dict) -> None:
        if not obj.get("inventory"):
            raise _bad("inventory", "This field is required.")
        if obj.get("source") == "scm":
            if not obj.get("source_project"):
                raise _bad("source_project", "Project required for scm type sources.")
            if self.project_root and not (self.project_root / obj.get("source_path", "")).exists():
                raise _bad("source_path", f"{obj.get('source_path')} is not in the project.")
        elif not obj.get("source"):
            raise _bad("source", "This field is required.")
        if obj.get("credential"):
            kind = self._credential_kind(obj["credential"])
            if kind not in ("cloud", "vault", "insights", "kubernetes"):
                raise _bad("credential", f"A {kind} credential cannot be used by an inventory source.")

    def _credential_kind(self, credential_id: int) -> str:
        credential = self._objects["credentials"][credential_id]
        return self._objects["credential_types"][credential["credential_type"]]["kind"]

    def _validate_job_templates(self, obj: dict) -> None:
        if not obj.get("project"):
            raise _bad("project", "This field is required.")
        if not obj.get("playbook"):
            raise _bad("playbook", "This field is required.")
        if self._playbooks is not None and obj["playbook"] not in self._playbooks:
            raise _bad("playbook", f'Playbook "{obj["playbook"]}" not found for project.')
        if not obj.get("inventory") and not obj.get("ask_inventory_on_launch"):
            raise _bad("inventory", 'Job Template must provide "inventory" or allow prompting for it.')
        if obj.get("job_type") not in ("run", "check"):
            raise _bad("job_type", "not a valid choice")
        self._validate_json_text("extra_vars", obj.get("extra_vars"))

    def _validate_workflow_job_templates(self, obj: dict) -> None:
        self._validate_json_text("extra_vars", obj.get("extra_vars"))

    @staticmethod
    def _validate_json_text(field: str, value: Any) -> None:
        if value in (None, ""):
            return
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            raise _bad(field, "must be JSON (or a YAML dict)") from None
        if not isinstance(parsed, dict):
            raise _bad(field, "must be a dictionary")

    def _validate_workflow_job_template_nodes(self, obj: dict) -> None:
        if not obj.get("workflow_job_template"):
            raise _bad("workflow_job_template", "This field is required.")
        if not obj.get("identifier"):
            raise _bad("identifier", "This field is required.")
        self._validate_prompts(obj)

    def _validate_schedules(self, obj: dict) -> None:
        if not obj.get("unified_job_template"):
            raise _bad("unified_job_template", "This field is required.")
        self._schedule_times(obj.get("rrule", ""), strict=True)
        self._validate_prompts(obj)

    def _validate_prompts(self, obj: dict) -> None:
        ujt_id = obj.get("unified_job_template")
        if ujt_id in (None, ""):
            return
        found = self._ujt(ujt_id)
        if found is None:
            raise _bad("unified_job_template", f'Invalid pk "{ujt_id}" - object does not exist.')
        collection, ujt = found
        given = {k for k in PROMPTS if obj.get(k) not in (None, "")}
        if collection != "job_templates":
            if collection == "workflow_approval_templates" and (given or obj.get("extra_data")):
                raise _bad("unified_job_template", "An approval node takes no prompts.")
            return
        for field in sorted(given):
            if not ujt.get(PROMPTS[field]):
                raise _bad(field, f"Field is not configured to prompt on launch ({PROMPTS[field]} is false).")
        extra = obj.get("extra_data") or {}
        if extra and not ujt.get("ask_variables_on_launch"):
            survey = self._surveys.get(("job_templates", ujt["id"])) if ujt.get("survey_enabled") else None
            allowed = {q["variable"] for q in (survey or {}).get("spec", [])}
            refused = sorted(set(extra) - allowed)
            if refused:
                raise _bad("extra_data", f"Variables {refused} are not allowed on launch. Check the Prompt on "
                                         "Launch setting on the job template or the survey.")

    @staticmethod
    def _schedule_times(rule: str, strict: bool = False) -> dict:
        try:
            if not re.match(r"^DTSTART(;TZID=[\w/+-]+)?:\d{8}T\d{6}Z?\s", rule or ""):
                raise ValueError("a valid DTSTART is required (DTSTART:YYYYMMDDTHHMMSSZ or DTSTART;TZID=…)")
            if "RRULE:" not in rule:
                raise ValueError("an RRULE is required")
            if re.search(r"FREQ=(SECONDLY|MINUTELY)", rule):
                raise ValueError("SECONDLY and MINUTELY are not allowed")
            parsed = dateutil_rrule.rrulestr(re.sub(r"\s+(?=(RRULE|EXRULE|RDATE|EXDATE)[:;])", "\n", rule),
                                             forceset=True)
            upcoming = parsed.after(datetime.now(UTC))
            first = next(iter(parsed), None)
        except (ValueError, TypeError) as err:
            if strict:
                raise _bad("rrule", str(err)) from None
            return {}
        return {"dtstart": first.isoformat() if first else None,
                "next_run": upcoming.isoformat() if upcoming else None, "timezone": "UTC"}

    def _validate_survey(self, spec: dict) -> None:
        for key in ("name", "description", "spec"):
            if key not in spec:
                raise ApiError(400, {"error": f"'{key}' missing from survey spec."})
        if not isinstance(spec["spec"], list):
            raise ApiError(400, {"error": "'spec' must be a list of items."})
        seen = set()
        for index, question in enumerate(spec["spec"]):
            where = f"survey question {index}"
            for key in ("type", "question_name", "variable", "required"):
                if key not in question:
                    raise ApiError(400, {"error": f"'{key}' missing from {where}."})
            if question["type"] not in SURVEY_TYPES:
                raise ApiError(400, {"error": f"'{question['type']}' in {where} is not a valid question type."})
            if question["variable"] in seen:
                raise ApiError(400, {"error": f"'variable' '{question['variable']}' duplicated in {where}."})
            seen.add(question["variable"])
            default = question.get("default")
            kind = question["type"]
            if kind in ("text", "textarea", "password") and default is not None and not isinstance(default, str):
                raise ApiError(400, {"error": f"Value {default} for 'default' expected to be a string ({where})."})
            if kind == "integer" and default not in (None, "") and (
                    not isinstance(default, int) or isinstance(default, bool)):
                raise ApiError(400, {"error": f"Value {default} for 'default' expected to be an integer ({where})."})
            if kind == "integer" and isinstance(default, int):
                low, high = question.get("min"), question.get("max")
                if (low is not None and default < low) or (high is not None and default > high):
                    raise ApiError(400, {"error": f"'default' {default} outside min/max in {where}."})
            if kind in ("multiplechoice", "multiselect"):
                choices = question.get("choices")
                if isinstance(choices, str):
                    choices = [c for c in choices.split("\n") if c]
                if not choices:
                    raise ApiError(400, {"error": f"'choices' missing or empty in {where}."})
                defaults = default.split("\n") if kind == "multiselect" and isinstance(default, str) else [default]
                for value in defaults:
                    if value not in (None, "") and value not in choices:
                        raise ApiError(400, {"error": f"Default choice {value} must be one of {choices} in {where}."})

    # --- sub-resources -------------------------------------------------------------------------------------------
    def _sub(self, method: str, collection: str, obj: dict, sub: str, path: str, query: dict, body: Any, user: str):
        key = (collection, obj["id"])
        if sub == "survey_spec" and collection in ("job_templates", "workflow_job_templates"):
            if method == "GET":
                return 200, copy.deepcopy(self._surveys.get(key, {}))
            if method == "POST":
                self._validate_survey(body or {})
                self._surveys[key] = copy.deepcopy(body)
                return 200, {}
            if method == "DELETE":
                self._surveys.pop(key, None)
                return 200, {}
        if sub in ASSOCIATIONS.get(collection, ()):
            target = ASSOCIATION_TARGET[sub]
            ids = self._assoc.setdefault((collection, obj["id"], sub), [])
            if method == "GET":
                items = [(target, self._objects[target][i]) for i in ids]
                page = self._page(path, query, items)
                if sub in ORDERED_ASSOCIATIONS:  # kept in the order they were associated
                    page["results"].sort(key=lambda r: ids.index(r["id"]))
                return 200, page
            if method == "POST":
                return self._associate(collection, obj, sub, ids, body or {})
        if sub == "workflow_nodes" and method == "GET":
            if collection == "workflow_job_templates":
                nodes = self._objects["workflow_job_template_nodes"].values()
                items = [("workflow_job_template_nodes", n) for n in nodes if n["workflow_job_template"] == obj["id"]]
            elif collection == "workflow_jobs":
                items = [("workflow_job_nodes", n) for n in self._objects["workflow_job_nodes"].values()
                         if n["workflow_job"] == obj["id"]]
            else:
                raise ApiError(404, {"detail": "Not found."})
            return 200, self._page(path, query, items)
        if sub == "create_approval_template" and collection == "workflow_job_template_nodes" and method == "POST":
            return self._approval_template(obj, body or {})
        if sub == "schedules" and collection in UJT_COLLECTIONS:
            if method == "GET":
                items = [("schedules", s) for s in self._objects["schedules"].values()
                         if s["unified_job_template"] == obj["id"]]
                return 200, self._page(path, query, items)
            if method == "POST":
                return 201, self.render("schedules", self._create("schedules", {**(body or {}),
                                                                                 "unified_job_template": obj["id"]}))
        if sub == "update" and collection == "projects" and method == "POST":
            self._after_save("projects", obj, created=False)
            update = self.render("project_updates", self._objects["project_updates"][obj["_current_update"]])
            return 202, {**update, "project_update": update["id"]}
        if sub == "playbooks" and collection == "projects" and method == "GET":
            return 200, list(self._playbooks or [])
        if collection == "workflow_approvals" and sub in ("approve", "deny") and method == "POST":
            if obj["status"] != "pending":
                raise ApiError(400, {"error": "This workflow step has already been approved or denied."})
            obj["status"] = "successful" if sub == "approve" else "failed"
            obj["failed"] = sub == "deny"
            obj["_approver"] = user
            return 204, None
        raise ApiError(404 if method == "GET" else 405, {"detail": f"{method} {path} is not served by the stand-in."})

    def _associate(self, collection: str, obj: dict, sub: str, ids: list[int], body: dict):
        target = ASSOCIATION_TARGET[sub]
        try:
            other_id = int(body["id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, {"detail": "'id' is required to associate."}) from None
        if body.get("disassociate"):
            if other_id in ids:
                ids.remove(other_id)
            return 204, None
        if other_id not in self._objects[target]:
            raise ApiError(400, {"detail": f"{TYPES[target]} {other_id} does not exist."})
        if collection in ("workflow_job_template_nodes", "schedules") and sub in PROMPT_ASSOCIATIONS:
            ujt = self._ujt(obj.get("unified_job_template") or -1)
            if ujt is None or not ujt[1].get(PROMPT_ASSOCIATIONS[sub]):
                raise ApiError(400, {"detail": f"{sub} given but the template does not prompt for them "
                                               f"({PROMPT_ASSOCIATIONS[sub]} is false)."})
        if sub == "credentials":
            new_type = self._objects["credentials"][other_id]["credential_type"]
            for existing in ids:
                if self._objects["credentials"][existing]["credential_type"] == new_type and existing != other_id:
                    raise ApiError(400, {"error": "Cannot assign multiple credentials of the same type "
                                                  f"({self._objects['credential_types'][new_type]['name']})."})
        if sub in EDGES:
            child = self._objects[target][other_id]
            if child["workflow_job_template"] != obj["workflow_job_template"]:
                raise ApiError(400, {"error": "Nodes must be in the same workflow job template."})
            if other_id == obj["id"] or self._reaches(other_id, obj["id"]):
                raise ApiError(400, {"error": "Cycle detected."})
            for edge in EDGES:
                if edge != sub and other_id in self._assoc.get(("workflow_job_template_nodes", obj["id"], edge), []):
                    raise ApiError(400, {"error": f"Relationship not allowed: already linked as {edge}."})
        if other_id not in ids:
            ids.append(other_id)
        return 204, None

    def _reaches(self, start: int, goal: int) -> bool:
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node in seen:
                continue
            seen.add(node)
            for edge in EDGES:
                stack.extend(self._assoc.get(("workflow_job_template_nodes", node, edge), []))
        return False

    def _approval_template(self, node: dict, body: dict):
        fields = {k: body[k] for k in ("name", "description", "timeout") if k in body}
        if not fields.get("name"):
            raise _bad("name", "This field is required.")
        existing = self._ujt(node.get("unified_job_template") or -1)
        if existing and existing[0] == "workflow_approval_templates":
            template = self._update("workflow_approval_templates", existing[1], fields)
        else:
            if node.get("unified_job_template"):
                raise ApiError(400, {"error": "The node already runs a job template."})
            template = self._insert("workflow_approval_templates", fields)
            node["unified_job_template"] = template["id"]
        return 201, self.render("workflow_approval_templates", template)


class _Handler(BaseHTTPRequestHandler):
    api: AwxApiStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _respond(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-API-Product-Name", "AWX")
        self.send_header("X-API-Product-Version", AWX_VERSION)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _serve(self) -> None:
        split = urlsplit(self.path)
        path = split.path if split.path.endswith("/") else split.path + "/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._respond(400, {"detail": "JSON parse error"})
            return
        user = self.api.authenticate(self.headers)
        try:
            status, payload = self.api.handle(self.command, path, parse_qs(split.query), body, user)
        except ApiError as err:
            status, payload = err.status, err.body
        self._respond(status, payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--token", action="append", default=[], help="accept this bearer token (as admin)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="password")
    parser.add_argument("--project-root", help="the checkout whose playbooks and inventories the project offers")
    parser.add_argument("--dump", help="write the state here after every change")
    args = parser.parse_args(argv)
    api = AwxApiStandin(project_root=args.project_root, users={args.user: args.password},
                        tokens={t: args.user for t in args.token}, dump_path=args.dump).start(args.port)
    if args.port_file:
        Path(args.port_file).write_text(str(api.port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"AWX API stand-in on {api.url}", flush=True)
    stop.wait()
    api.stop()


if __name__ == "__main__":
    main()
