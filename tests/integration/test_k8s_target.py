"""roles/k8s_target against the Kubernetes API stand-in (tests/standins/k8s_api.py) and the kubectl
stand-in (tests/standins/bin/kubectl): the real kubernetes.core modules and the real kubectl connection
plugin, through ansible-playbook. No database needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import ROOT, run_playbook

STANDINS = ROOT / "tests" / "standins"
sys.path.insert(0, str(STANDINS))

from k8s_api import K8sApiStandin, label_selector_matches, load_seed  # noqa: E402

# One worker runs the whole module: its module-scoped fixtures (a configured controller, an API stand-in)
# are set up once.
pytestmark = [pytest.mark.playbook, pytest.mark.xdist_group("k8s")]

PLAYBOOKS = "tests/integration/playbooks"
REVISION = "0007_email_verified"

SEED = {
    "pods": [
        # Sorted by name the first two would win: discovery must skip them on phase and readiness.
        {"name": "release-manager-1-pending", "namespace": "staging", "labels": {"app": "release-manager"},
         "phase": "Pending"},
        {"name": "release-manager-2-notready", "namespace": "staging", "labels": {"app": "release-manager"},
         "phase": "Running", "ready": False},
        {"name": "release-manager-3-ready", "namespace": "staging", "labels": {"app": "release-manager"},
         "phase": "Running", "ready": True, "log": "".join(f"line {i}\n" for i in range(1, 601))},
        {"name": "release-manager-9-elsewhere", "namespace": "other", "labels": {"app": "release-manager"},
         "phase": "Running", "ready": True},
        {"name": "db-0", "namespace": "staging", "labels": {"app": "db"}, "phase": "Running"},
        {"name": "worker-abc", "namespace": "staging", "labels": {"app": "worker"}, "phase": "Running"},
        {"name": "release-manager-a-pending", "namespace": "broken", "labels": {"app": "release-manager"},
         "phase": "Pending"},
        {"name": "release-manager-b-notready", "namespace": "broken", "labels": {"app": "release-manager"},
         "phase": "Running", "ready": False},
    ],
    "deployments": [
        {"name": "release-manager", "namespace": "staging", "replicas": 2, "selector": {"app": "release-manager"}},
        {"name": "worker", "namespace": "staging", "replicas": 3, "selector": {"app": "worker"}},
    ],
}


@contextmanager
def standin(tmp_path: Path):
    """The API stand-in with SEED, a kubeconfig for it, and the environment for ansible-playbook."""
    with K8sApiStandin(SEED) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="staging")
        exec_log = tmp_path / "kubectl.log"
        env = {
            "PATH": f"{STANDINS / 'bin'}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "KUBECTL_STANDIN_LOG": str(exec_log),
            "K8S_AUTH_KUBECONFIG": "",  # only the kubeconfig the role is given
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",  # not profile_tasks: JSON only
        }
        yield api, kubeconfig, exec_log, env


@pytest.fixture
def k8s(tmp_path: Path):
    with standin(tmp_path) as parts:
        yield parts


def inventory(tmp_path: Path) -> str:
    """localhost as the runner. (Not extra vars: those would also override the pod host's connection.)"""
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return str(path)


def role_vars(kubeconfig: Path, tmp_path: Path, namespace: str = "staging") -> dict:
    return {
        "rm_k8s_namespace": namespace,
        "rm_k8s_app_selector": "app=release-manager",
        "rm_k8s_db_selector": "app=db",
        "rm_k8s_app_deployment": "release-manager",
        "rm_k8s_writer_deployments": ["release-manager", "worker"],
        "rm_k8s_kubeconfig": str(kubeconfig),
        "rm_k8s_app_python": sys.executable,
        "k8s_cycle_log_dir": str(tmp_path),
        "k8s_cycle_out": str(tmp_path / "facts.json"),
        "k8s_cycle_revision": REVISION,
    }


def task_results(stdout: str, name: str) -> list[dict]:
    """The localhost results of every task whose name ends with `name`, in order (json callback)."""
    data = json.loads(stdout[stdout.index("{"):])
    return [task["hosts"]["localhost"] for play in data["plays"] for task in play["tasks"]
            if task["task"]["name"].endswith(name) and "localhost" in task["hosts"]]


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    """Run the whole cycle once; the API stand-in's state, the facts, the exec log and the results."""
    tmp_path = tmp_path_factory.mktemp("k8s_cycle")
    with standin(tmp_path) as (api, kubeconfig, exec_log, env):
        run = run_playbook(f"{PLAYBOOKS}/k8s_target_cycle.yml", inventory=inventory(tmp_path),
                           extra_vars=role_vars(kubeconfig, tmp_path), env=env)
        assert run.rc == 0, run.output[-6000:]
        facts = json.loads((tmp_path / "facts.json").read_text())
        exec_lines = [json.loads(line) for line in exec_log.read_text().splitlines()] if exec_log.exists() else []
        yield api, facts, exec_lines, run, tmp_path


def test_discover_picks_the_running_and_ready_pod(cycle):
    _, facts, _, _, _ = cycle
    assert facts["app_pod"] == "release-manager-3-ready"
    assert facts["db_pod"] == "db-0"
    assert facts["pod_host_name"] == "rm_app_pod"
    assert facts["pod_host"] == {"connection": "kubernetes.core.kubectl", "pod": "release-manager-3-ready",
                                 "namespace": "staging"}


def test_a_task_delegated_to_the_pod_runs_through_kubectl_exec(cycle):
    _, facts, exec_lines, _, _ = cycle
    assert facts["exec_stdout"] == "hi from release-manager-3-ready"
    assert exec_lines, "the kubectl stand-in was never called"
    assert {(e["pod"], e["namespace"]) for e in exec_lines} == {("release-manager-3-ready", "staging")}
    assert not [e for e in exec_lines if "refused" in e]
    commands = " ".join(" ".join(e["command"]) for e in exec_lines)
    assert "AnsiballZ_command.py" in commands  # the module went in with dd and ran "in the pod"


def test_scale_down_stops_the_writers_and_scale_up_restores_their_counts(cycle):
    api, facts, _, run, _ = cycle
    assert facts["replicas_while_down"] == {"release-manager": 0, "worker": 0}
    # The second scale_down found zeros but kept the counts saved by the first one.
    assert facts["saved_replicas"] == {"release-manager": 2, "worker": 3}
    for name, replicas in {"release-manager": 2, "worker": 3}.items():
        dep = api.deployment("staging", name)
        assert dep["spec"]["replicas"] == replicas
        assert dep["status"]["readyReplicas"] == replicas
    # scale_up before anything was saved was skipped, not failed.
    first_scale_up = task_results(run.stdout, "Restore the writers' replica counts")[0]
    assert first_scale_up.get("skipped") is True


def test_annotate_records_the_revision_and_is_idempotent(cycle):
    api, facts, _, run, _ = cycle
    annotations = api.deployment("staging", "release-manager")["metadata"]["annotations"]
    assert annotations["release-manager.io/schema-revision"] == REVISION
    assert annotations["release-manager.io/schema-migrated-at"].endswith("Z")
    patched = task_results(run.stdout, "Set the revision annotations")
    assert [r["changed"] for r in patched] == [True, False]


def test_read_revision_reads_the_annotation_back_and_none_when_missing(cycle):
    _, facts, _, _, _ = cycle
    assert facts["recorded"] == REVISION
    assert facts["unannotated"] is None


def test_collect_logs_writes_the_tail_and_never_fails(cycle):
    _, facts, _, _, tmp_path = cycle
    lines = (tmp_path / "app-pod.log").read_text().splitlines()
    assert len(lines) == 500 and lines[0] == "line 101" and lines[-1] == "line 600"
    assert facts["logs_collected"] is True
    assert facts["gone_logs_collected"] is False
    assert not (tmp_path / "gone-pod.log").exists()


def test_discover_without_a_ready_pod_fails_listing_pods_and_phases(k8s, tmp_path):
    _, kubeconfig, exec_log, env = k8s
    env = {**env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    run = run_playbook(f"{PLAYBOOKS}/k8s_target_discover.yml", inventory=inventory(tmp_path),
                       extra_vars=role_vars(kubeconfig, tmp_path, namespace="broken"), env=env)
    assert run.rc != 0
    output = " ".join(run.output.split())
    assert "No app pod is Running and Ready in namespace broken" in output
    assert "release-manager-a-pending (Pending, not Ready)" in output
    assert "release-manager-b-notready (Running, not Ready)" in output
    assert not exec_log.exists()


def test_discover_fails_when_the_database_pod_is_required_and_missing(k8s, tmp_path):
    _, kubeconfig, _, env = k8s
    env = {**env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    extra = {**role_vars(kubeconfig, tmp_path), "rm_k8s_db_selector": "app=postgres"}
    run = run_playbook(f"{PLAYBOOKS}/k8s_target_discover.yml", inventory=inventory(tmp_path), extra_vars=extra,
                       env=env)
    assert run.rc != 0
    assert "No database pod is Running and Ready" in " ".join(run.output.split())
    # Without a database selector (a managed database) discovery passes.
    run = run_playbook(f"{PLAYBOOKS}/k8s_target_discover.yml", inventory=inventory(tmp_path),
                       extra_vars={**extra, "rm_k8s_db_selector": ""}, env=env)
    assert run.rc == 0, run.output[-3000:]


# --- the stand-ins themselves -------------------------------------------------------------------

def test_kubectl_standin_refuses_a_pod_the_api_does_not_know(k8s, tmp_path):
    _, kubeconfig, exec_log, env = k8s
    cmd = [str(STANDINS / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig), "-n", "staging",
           "exec", "-i", "no-such-pod", "--", "/bin/sh", "-c", "echo should-not-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 1
    assert 'pods "no-such-pod" not found' in proc.stderr
    assert "should-not-run" not in proc.stdout
    assert json.loads(exec_log.read_text().splitlines()[-1])["refused"]

    cmd[7] = "release-manager-1-pending"
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 1 and "current phase is Pending" in proc.stderr


def test_kubectl_standin_runs_the_command_after_the_double_dash(k8s, tmp_path):
    _, kubeconfig, exec_log, env = k8s
    target = tmp_path / "sent.txt"
    proc = subprocess.run(
        [str(STANDINS / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig), "-n", "staging", "exec", "-i",
         "release-manager-3-ready", "-c", "app", "--", "/bin/sh", "-c", f"dd of={target} bs=65536 && sleep 0"],
        input="payload", capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "payload"
    entry = json.loads(exec_log.read_text().splitlines()[-1])
    assert (entry["pod"], entry["namespace"], entry["container"]) == ("release-manager-3-ready", "staging", "app")


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ("app=db", {"app": "db"}, True),
    ("app==db,tier=data", {"app": "db"}, False),
    ("app!=db", {"app": "web"}, True),
    ("app in (web, db)", {"app": "db"}, True),
    ("app notin (web,db)", {"app": "db"}, False),
    ("!canary", {"app": "db"}, True),
    ("canary", {"app": "db"}, False),
    ("", {}, True),
])
def test_api_standin_label_selectors(selector, labels, matches):
    assert label_selector_matches(selector, labels) is matches


def test_api_standin_scale_sets_spec_and_status_and_dumps_state(tmp_path):
    import urllib.request

    dump = tmp_path / "state.json"
    with K8sApiStandin(SEED, dump_path=dump) as api:
        request = urllib.request.Request(  # noqa: S310 - local stand-in
            f"{api.url}/apis/apps/v1/namespaces/staging/deployments/worker/scale", method="PATCH",
            data=json.dumps({"spec": {"replicas": 0}}).encode(),
            headers={"Content-Type": "application/merge-patch+json"})
        with urllib.request.urlopen(request) as resp:  # noqa: S310 - local stand-in
            assert json.load(resp)["spec"]["replicas"] == 0
        dep = next(d for d in json.loads(dump.read_text())["deployments"] if d["metadata"]["name"] == "worker")
        assert dep["spec"]["replicas"] == 0 and "readyReplicas" not in dep["status"]
        assert dep["metadata"]["generation"] == dep["status"]["observedGeneration"] == 2
        with urllib.request.urlopen(f"{api.url}/api/v1/namespaces/staging/pods?labelSelector=app%3Ddb") as resp:  # noqa: S310
            body = json.load(resp)
        assert body["kind"] == "PodList" and [p["metadata"]["name"] for p in body["items"]] == ["db-0"]
    assert load_seed(dump)["deployments"][1]["spec"]["replicas"] == 0  # a dump seeds a new stand-in


RUNBOOK_CLUSTER = {  # staging as the runbook labels it: `kubectl get pod -l app=db-staging -n staging`
    "pods": [
        {"name": "release-manager-7c9d-ready", "namespace": "staging", "labels": {"app": "release-manager"},
         "phase": "Running", "ready": True},
        {"name": "postgres-0", "namespace": "staging", "labels": {"app": "db-staging"}, "phase": "Running"},
    ],
    "deployments": [
        {"name": "release-manager", "namespace": "staging", "replicas": 2, "selector": {"app": "release-manager"}},
        {"name": "release-manager-worker", "namespace": "staging", "replicas": 1},
    ],
}


@pytest.mark.db
def test_the_shipped_staging_inventory_finds_the_pods_where_the_runbook_labels_them(new_database, tmp_path):
    from support import local_vars, reports, revision_of

    url = new_database("stg")
    with K8sApiStandin(RUNBOOK_CLUSTER) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="staging")
        env = {"PATH": f"{STANDINS / 'bin'}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               "KUBECTL_STANDIN_LOG": str(tmp_path / "kubectl.log"), "K8S_AUTH_KUBECONFIG": ""}
        # Only what differs on this machine: where the database, the chain and the pod's Python are.
        extra = local_vars(tmp_path, vault_rm_db_password="unused", rm_database_url=url, rm_alembic_url=url,
                           rm_alembic_config=str(ROOT / "alembic.ini"), rm_k8s_app_python=sys.executable,
                           rm_k8s_kubeconfig=str(kubeconfig))
        result = run_playbook("playbooks/migrate.yml", inventory="inventories/staging", env=env, extra_vars=extra)
        annotation = api.deployment("staging", "release-manager")["metadata"]["annotations"]
    assert result.rc == 0, result.output[-3000:]
    assert revision_of(url) == ["9c2b3f1a4e5d"]
    assert annotation["release-manager.io/schema-revision"] == "9c2b3f1a4e5d"
    report = reports(tmp_path / "reports")[-1]
    assert report["environment"] == "staging" and report["kubernetes"]["app_pod"] == "release-manager-7c9d-ready"
    assert '"pod": "release-manager-7c9d-ready"' in (tmp_path / "kubectl.log").read_text()  # alembic ran in the pod
