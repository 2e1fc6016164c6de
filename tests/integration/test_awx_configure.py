"""AWX as code (playbooks/awx_configure.yml) and the AWX approval lookup (roles/preflight/tasks/awx_approval.yml),
run with the real ansible-playbook and the awx.awx collection against the AWX API stand-in
(tests/standins/awx_api.py), which refuses what AWX would refuse (unknown playbooks, bad surveys, prompts
a template does not ask for, ...)."""

from __future__ import annotations

import base64
import json
import re
import sys
import urllib.request

import pytest
import yaml
from standins.awx_api import ApiError, AwxApiStandin
from support import ROOT, run_playbook

# One worker runs the whole module: its module-scoped fixtures (a configured controller, an API stand-in)
# are set up once.
pytestmark = [pytest.mark.playbook, pytest.mark.xdist_group("awx")]

ADMIN_TOKEN = "standin-admin-token"
READER_TOKEN = "standin-reader-token"
SECRETS = {
    "RM_STAGING_DB_PASSWORD": "staging-secret-4f1c",
    "RM_PRODUCTION_DB_PASSWORD": "production-secret-9a2e",
    "RM_AWX_APPROVAL_READER_TOKEN": READER_TOKEN,
}
RECAP = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# What each job template must run, where, and which variables its survey must ask for.
EXPECTED_TEMPLATES = {
    "migrate-staging": ("playbooks/migrate.yml", "release-migrations staging",
                        {"target_revision", "dry_run", "maintenance_mode"}),
    "migrate-production": ("playbooks/migrate.yml", "release-migrations production",
                           {"target_revision", "dry_run", "maintenance_mode", "approved_by", "approved_sql_sha256"}),
    "rollback-production": ("playbooks/rollback.yml", "release-migrations production",
                            {"rollback_steps", "rollback_to", "approved_by"}),
    "restore-production": ("playbooks/restore.yml", "release-migrations production",
                           {"backup_path", "confirm_restore", "approved_by"}),
    "backup": ("playbooks/backup.yml", "release-migrations staging", set()),
    "drill": ("playbooks/drill.yml", "release-migrations staging", {"backup_path", "drill_steps", "take_backup"}),
    "migrate-fleet": ("playbooks/migrate.yml", "release-migrations fleet",
                      {"target_revision", "dry_run", "rm_waves", "rm_max_fail_percentage"}),
}


@pytest.fixture(scope="module")
def awx():
    users = {"admin": "admin-password", "reader": "reader-password", "carol": "carol-password",
             "dave": "dave-password"}
    with AwxApiStandin(project_root=ROOT, users=users,
                       tokens={ADMIN_TOKEN: "admin", READER_TOKEN: "reader"}) as api:
        yield api


def controller_env(api: AwxApiStandin, token: str) -> dict:
    return {"CONTROLLER_HOST": api.url, "CONTROLLER_OAUTH_TOKEN": token, "CONTROLLER_VERIFY_SSL": "false",
            "CONTROLLER_USERNAME": "", "CONTROLLER_PASSWORD": "", "ANSIBLE_PIPELINING": "1"}


@pytest.fixture(scope="module")
def configured(awx):
    """awx_configure.yml run twice against one controller: (first run, second run, the controller's state)."""
    env = {**controller_env(awx, ADMIN_TOKEN), **SECRETS}
    first = run_playbook("playbooks/awx_configure.yml", inventory="inventories/awx", env=env, timeout=300)
    assert first.rc == 0, first.output[-4000:]
    # The second run at -vvvv: module arguments and results are printed, secrets must not be.
    second = run_playbook("playbooks/awx_configure.yml", inventory="inventories/awx", env=env, timeout=300,
                          verbosity=4)
    assert second.rc == 0, second.output[-4000:]
    return first, second, awx.state()


def by_name(state: dict, collection: str) -> dict[str, dict]:
    return {o.get("name", o.get("identifier")): o for o in state[collection]}


def name_of(state: dict, collection: str, obj_id: int | None) -> str | None:
    return next((o["name"] for o in state[collection] if o["id"] == obj_id), None)


def test_no_verbosity_prints_a_secret_of_the_controller_or_the_databases(configured):
    first, second, _ = configured
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in second.output or "censored" in second.output
    for secret in (*SECRETS.values(), ADMIN_TOKEN):
        assert secret not in first.output and secret not in second.output


def test_second_run_changes_nothing(configured):
    first, second, _ = configured
    ok, changed, unreachable, failed = map(int, RECAP.search(first.stdout).groups())
    assert changed > 0 and failed == 0 and unreachable == 0
    ok, changed, unreachable, failed = map(int, RECAP.search(second.stdout).groups())
    assert (changed, failed) == (0, 0), second.stdout[-3000:]


def test_job_templates_run_our_playbooks_on_the_environment_inventories(configured):
    _, _, state = configured
    templates = by_name(state, "job_templates")
    assert set(templates) == set(EXPECTED_TEMPLATES)
    project = by_name(state, "projects")["release-migrations"]
    for name, (playbook, inventory, _) in EXPECTED_TEMPLATES.items():
        jt = templates[name]
        assert jt["playbook"] == playbook and (ROOT / playbook).is_file()
        assert name_of(state, "inventories", jt["inventory"]) == inventory
        assert jt["project"] == project["id"]
        assert name_of(state, "execution_environments", jt["execution_environment"]) == "release-migrations-ee"
        credentials = {name_of(state, "credentials", c) for c in jt["associations"]["credentials"]}
        environment = "production" if "production" in inventory else "staging"
        assert f"release-migrations {environment} database" in credentials
    # The production templates read the approval from AWX; nothing else needs the reader.
    for name, jt in templates.items():
        readers = {name_of(state, "credentials", c) for c in jt["associations"]["credentials"]}
        assert ("release-migrations approval reader" in readers) == name.endswith("-production")
    # backup and drill serve both environments: inventory and credentials are asked at launch.
    for name in ("backup", "drill"):
        assert templates[name]["ask_inventory_on_launch"] and templates[name]["ask_credential_on_launch"]


def test_inventories_come_from_the_repository_and_secrets_from_credentials(configured):
    first, _, state = configured
    sources = {name_of(state, "inventories", s["inventory"]): s for s in state["inventory_sources"]}
    assert sources["release-migrations staging"]["source_path"] == "inventories/staging/hosts.yml"
    assert sources["release-migrations production"]["source_path"] == "inventories/production/hosts.yml"
    assert all(s["source"] == "scm" and s["update_on_launch"] for s in sources.values())
    credentials = by_name(state, "credentials")
    assert credentials["release-migrations production database"]["inputs"] == {"password": "$encrypted$"}
    assert credentials["release-migrations approval reader"]["inputs"]["oauth_token"] == "$encrypted$"
    ctype = by_name(state, "credential_types")["release-migrations database"]
    assert ctype["injectors"] == {"extra_vars": {"vault_rm_db_password": "{{ password }}"}}
    for secret in SECRETS.values():
        assert secret not in first.output


def test_surveys_ask_for_variables_the_playbooks_read(configured):
    _, _, state = configured
    code = "\n".join(p.read_text() for d in ("playbooks", "roles", "inventories") for p in (ROOT / d).rglob("*.yml")
                     if "awx_config" not in p.parts and p.name != "awx_configure.yml")
    for name, jt in by_name(state, "job_templates").items():
        survey = jt["survey_spec"]
        variables = {q["variable"] for q in survey["spec"]}
        assert jt["survey_enabled"] and EXPECTED_TEMPLATES[name][2] <= variables, name
        for variable in variables:
            assert re.search(rf"\b{variable}\b", code), f"{name}'s survey asks for {variable}, which nothing reads"
        # Only staging takes free extra variables: a production launch cannot switch a gate off.
        assert jt["ask_variables_on_launch"] == (name == "migrate-staging"), name
    restore = {q["variable"]: q for q in by_name(state, "job_templates")["restore-production"]["survey_spec"]["spec"]}
    assert restore["confirm_restore"]["required"] and "default" not in restore["confirm_restore"]


def test_workflow_goes_through_an_approval_before_production_and_rolls_back_on_failure(configured):
    _, _, state = configured
    workflow = by_name(state, "workflow_job_templates")["release-migration"]
    nodes = {n["identifier"]: n for n in state["workflow_job_template_nodes"]
             if n["workflow_job_template"] == workflow["id"]}
    ids = {n["id"]: ident for ident, n in nodes.items()}

    def runs(identifier):
        return nodes[identifier]["summary_fields"]["unified_job_template"]

    def edges(identifier, kind):
        return {ids[i] for i in nodes[identifier][kind]}

    assert runs("staging-migrate")["name"] == "migrate-staging"
    assert runs("staging-verify")["name"] == "drill"
    assert name_of(state, "inventories", nodes["staging-verify"]["inventory"]) == "release-migrations staging"
    assert runs("production-migrate")["name"] == "migrate-production"
    assert runs("production-rollback")["name"] == "rollback-production"
    approvals = by_name(state, "workflow_approval_templates")
    for identifier in ("approve-production", "approve-rollback"):
        assert runs(identifier)["unified_job_type"] == "workflow_approval"
        assert approvals[runs(identifier)["name"]]["timeout"] > 0
    # The production approval says what it approves: the SQL staging's job handed on.
    production_approval = approvals[runs("approve-production")["name"]]
    assert "the SQL staging ran" in production_approval["name"]
    assert "approved_sql_sha256" in production_approval["description"]

    assert edges("staging-migrate", "success_nodes") == {"staging-verify"}
    assert edges("staging-verify", "success_nodes") == {"approve-production"}
    assert edges("approve-production", "success_nodes") == {"production-migrate"}
    assert edges("production-migrate", "failure_nodes") == {"approve-rollback"}
    assert edges("approve-rollback", "success_nodes") == {"production-rollback"}
    # The only way into production is through its approval.
    parents = {ident for ident, n in nodes.items() for kind in ("success_nodes", "failure_nodes", "always_nodes")
               if nodes["production-migrate"]["id"] in n[kind]}
    assert parents == {"approve-production"}
    # The rollback goes to the revision given at launch (required), not a blind "-1".
    survey = {q["variable"]: q for q in workflow["survey_spec"]["spec"]}
    assert survey["rollback_to"]["required"] and workflow["survey_enabled"]


def test_failures_and_approvals_notify(configured):
    _, _, state = configured
    notification = by_name(state, "notification_templates")["release-migrations alerts"]
    assert notification["notification_type"] == "webhook"
    workflow = by_name(state, "workflow_job_templates")["release-migration"]
    assert workflow["associations"]["notification_templates_error"] == [notification["id"]]
    assert workflow["associations"]["notification_templates_approvals"] == [notification["id"]]
    for jt in state["job_templates"]:
        assert jt["associations"]["notification_templates_error"] == [notification["id"]], jt["name"]


def test_drill_runs_weekly_on_each_environment(configured):
    _, _, state = configured
    schedules = by_name(state, "schedules")
    drill = by_name(state, "job_templates")["drill"]
    for environment in ("staging", "production"):
        schedule = schedules[f"drill-{environment}-weekly"]
        assert schedule["unified_job_template"] == drill["id"] and schedule["enabled"]
        assert re.match(r"^DTSTART:\d{8}T\d{6}Z RRULE:FREQ=WEEKLY;BYDAY=SU$", schedule["rrule"])
        assert schedule["next_run"]
        assert name_of(state, "inventories", schedule["inventory"]) == f"release-migrations {environment}"
        assert [name_of(state, "credentials", c) for c in schedule["associations"]["credentials"]] == [
            f"release-migrations {environment} database"]


@pytest.mark.parametrize("change, refused", [
    ({"playbook": "playbooks/not_in_the_project.yml"}, "playbook"),
    ({"inventory": None}, "inventory"),
    ({"extra_vars": "[1, 2]"}, "extra_vars"),
])
def test_the_standin_refuses_job_templates_awx_refuses(awx, configured, change, refused):
    """The stand-in is only worth its green runs if it says no where AWX does."""
    _, _, state = configured
    jt = by_name(state, "job_templates")["migrate-staging"]
    body = {"name": "refused", "project": jt["project"], "playbook": jt["playbook"], "inventory": jt["inventory"]}
    with pytest.raises(ApiError) as err:
        awx.handle("POST", "/api/v2/job_templates/", {}, {**body, **change}, "admin")
    assert err.value.status == 400 and refused in err.value.body


def test_the_fleet_template_slices_the_fleet_across_execution_nodes(configured):
    _, _, state = configured
    templates = by_name(state, "job_templates")
    fleet = templates["migrate-fleet"]
    # Sliced: AWX launches a workflow of 2 jobs, each on its share of the fleet inventory; nothing else is sliced.
    assert fleet["job_slice_count"] == 2
    assert {name: jt["job_slice_count"] for name, jt in templates.items() if name != "migrate-fleet"} == {
        name: 1 for name in EXPECTED_TEMPLATES if name != "migrate-fleet"}
    assert not fleet["ask_job_slice_count_on_launch"] and not fleet["ask_variables_on_launch"]
    # AWX hands a group's hosts over in its own order: the play takes them by name, so the canary is known.
    extra_vars = json.loads(fleet["extra_vars"]) if isinstance(fleet["extra_vars"], str) else fleet["extra_vars"]
    assert extra_vars["rm_fleet_order"] == "sorted" and extra_vars["rm_reports_root"] == "/backups/reports"
    sources = {name_of(state, "inventories", s["inventory"]): s for s in state["inventory_sources"]}
    assert sources["release-migrations fleet"]["source_path"] == "inventories/fleet-example/hosts.yml"
    # Waves and the budget are survey answers (extra variables, which the play's serial and
    # max_fail_percentage can read; inventory variables they cannot).
    survey = {q["variable"]: q for q in fleet["survey_spec"]["spec"]}
    assert survey["rm_waves"]["type"] == "text" and survey["rm_waves"]["default"] == "1, 25%"
    budget = survey["rm_max_fail_percentage"]
    assert (budget["type"], budget["default"], budget["min"], budget["max"]) == ("integer", 0, 0, 100)


@pytest.mark.parametrize("value, refused", [
    (-1, "greater than or equal to 0"),
    ("two", "A valid integer is required"),
    (2.5, "A valid integer is required"),
    (True, "A valid integer is required"),
    (None, "may not be null"),
])
def test_the_standin_refuses_a_job_slice_count_awx_refuses(awx, configured, value, refused):
    _, _, state = configured
    jt = by_name(state, "job_templates")["migrate-fleet"]
    body = {"name": "sliced", "project": jt["project"], "playbook": jt["playbook"], "inventory": jt["inventory"],
            "job_slice_count": value}
    with pytest.raises(ApiError) as err:
        awx.handle("POST", "/api/v2/job_templates/", {}, body, "admin")
    assert err.value.status == 400 and refused in err.value.body["job_slice_count"][0]
    with pytest.raises(ApiError):
        awx.handle("PATCH", f"/api/v2/job_templates/{jt['id']}/", {}, {"job_slice_count": value}, "admin")
    assert awx.one("job_templates", name="migrate-fleet")["job_slice_count"] == 2


def test_the_standin_reads_a_job_slice_count_as_awx_does(awx, configured):
    _, _, state = configured
    jt = by_name(state, "job_templates")["migrate-fleet"]
    body = {"project": jt["project"], "playbook": jt["playbook"], "inventory": jt["inventory"]}
    for name, value, stored in (("sliced-text", "3", 3), ("sliced-float", 4.0, 4), ("unsliced", 0, 0)):
        status, created = awx.handle("POST", "/api/v2/job_templates/", {}, {**body, "name": name,
                                                                          "job_slice_count": value}, "admin")
        assert status == 201 and created["job_slice_count"] == stored
        awx.handle("DELETE", f"/api/v2/job_templates/{created['id']}/", {}, None, "admin")


def test_a_job_slice_count_below_1_is_refused_before_awx_is_touched(awx):
    env = {**controller_env(awx, ADMIN_TOKEN), **SECRETS}
    before = len(awx.requests)
    run = run_playbook("playbooks/awx_configure.yml", inventory="inventories/awx", env=env,
                       extra_vars={"awx_config_fleet_slices": 0}, timeout=300)
    assert run.rc != 0 and "job_slice_count must be a whole number of at least 1" in run.output
    assert len(awx.requests) == before


# --- the approval reaches the playbook --------------------------------------------------------------------

GATE_PLAYBOOK = """
- name: Run production's approval gate the way preflight does
  hosts: all
  gather_facts: false
  vars:
    rm_environment: production
    rm_reports_root: "{{ out_dir }}"
    preflight_require_approval: true
    preflight_require_sql_approval: true
    preflight_operation: "{{ gate_operation | default('drill') }}"   # drill: only the approval gate applies
  tasks:
    - name: What preflight's context and plan steps record
      ansible.builtin.set_fact:
        preflight_result: >-
          {{ {'database': 'release_manager', 'pending': [], 'inspect': {}, 'report_dir': out_dir, 'dry_run': false}
             | combine(gate_plan | default({})) }}

    - name: Gate
      block:
        - name: Gates
          ansible.builtin.include_role:
            name: preflight
            tasks_from: gates
      rescue:
        - name: Keep the failure
          ansible.builtin.set_fact:
            gate_failure: "{{ ansible_failed_result.msg }}"
      always:
        - name: Write what the gate saw
          ansible.builtin.copy:
            content: >-
              {{ {'approved_by': preflight_result.approved_by | default(none),
                  'source': preflight_result.approval_source | default(none),
                  'sql': preflight_result.sql_approval | default(none),
                  'failure': gate_failure | default(none)} | to_json }}
            dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
            mode: "0600"
"""


# What production's preflight planned: one revision, its SQL's hash, the plan's hash.
PLAN = {"pending": ["f00d00000001"], "sql_sha256": "cc" * 32, "revisions": [
    {"revision": "f00d00000001", "path": "alembic/versions/f00d00000001_x.py", "approval_sha256": "aa" * 32,
     "file_sha256": "bb" * 32}]}
STAGING_HANDED_ON = {"approved_sql_sha256": "cc" * 32, "approved_sql_revisions": {"f00d00000001": "aa" * 32}}


def approve(api: AwxApiStandin, approval_id: int, user: str, password: str, action: str = "approve") -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (the local stand-in)
        f"{api.url}/api/v2/workflow_approvals/{approval_id}/{action}/", data=b"{}", method="POST",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the local stand-in)
        assert response.status == 204


@pytest.fixture(scope="module")
def gate_results(awx, tmp_path_factory):
    """One run, one host per case (facts are per host): what the approval gate decided for each."""
    tmp = tmp_path_factory.mktemp("awx-approval")
    approved = awx.add_workflow_job(approvals=[{"name": "approve-production"}])
    approve(awx, awx.one("workflow_approvals", _workflow_job=approved)["id"], "carol", "carol-password")
    denied = awx.add_workflow_job(approvals=[{"name": "approve-production", "status": "failed", "approver": "dave"}])
    pending = awx.add_workflow_job(approvals=[{"name": "approve-production"}])
    rollback = awx.add_workflow_job(approvals=[
        {"name": "approve-production", "status": "successful", "approver": "carol"},
        {"name": "approve-rollback", "status": "successful", "approver": "dave"}])
    no_approval_node = awx.add_workflow_job(name="someone-elses-workflow")
    staging_ran = awx.add_workflow_job(approvals=[{"name": "approve-production", "status": "successful",
                                                   "approver": "carol"}], artifacts=STAGING_HANDED_ON)
    staging_ran_other_sql = awx.add_workflow_job(
        approvals=[{"name": "approve-production", "status": "successful", "approver": "carol"}],
        artifacts={"approved_sql_sha256": "dd" * 32, "approved_sql_revisions": {"f00d00000001": "ee" * 32}})
    migrate = {"gate_operation": "migrate", "gate_plan": PLAN}
    cases = {
        "approved": {"awx_workflow_job_id": approved},
        "denied_but_typed": {"awx_workflow_job_id": denied, "approved_by": "mallory"},
        "pending": {"awx_workflow_job_id": pending},
        "rollback_after_second_approval": {"awx_workflow_job_id": rollback},
        "workflow_without_approval_node": {"awx_workflow_job_id": no_approval_node, "approved_by": "erin"},
        "outside_awx_typed": {"approved_by": "alice"},
        "outside_awx_nothing": {},
        "wrong_token": {"awx_workflow_job_id": approved, "preflight_awx_token": "not-a-token"},
        "sql_handed_on_by_staging": {"awx_workflow_job_id": staging_ran, **migrate},
        "sql_changed_since_staging": {"awx_workflow_job_id": staging_ran_other_sql, **migrate},
        "sql_typed_inside_the_workflow": {"awx_workflow_job_id": staging_ran_other_sql,
                                          "approved_sql_sha256": PLAN["sql_sha256"], **migrate},
        "sql_typed_outside_awx": {"approved_by": "alice", "approved_sql_sha256": PLAN["sql_sha256"], **migrate},
        "sql_not_approved_outside_awx": {"approved_by": "alice", **migrate},
    }
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {**local, **hostvars, **({"awx_job_id": 900 + i} if "awx_workflow_job_id" in hostvars else {})}
        for i, (name, hostvars) in enumerate(cases.items())}}}))
    playbook = tmp / "gate.yml"
    playbook.write_text(GATE_PLAYBOOK)
    run = run_playbook(str(playbook), inventory=str(inventory), extra_vars={"out_dir": str(tmp)},
                       env={**controller_env(awx, READER_TOKEN), "ANSIBLE_FORKS": "10"}, timeout=300)
    assert run.rc == 0, run.output[-4000:]
    assert READER_TOKEN not in run.output
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in cases}


def test_awx_approval_names_the_approver(gate_results):
    assert gate_results["approved"] == {"approved_by": "carol", "source": "awx-approval", "failure": None, "sql": None}


def test_latest_granted_approval_is_the_one_recorded(gate_results):
    assert gate_results["rollback_after_second_approval"]["approved_by"] == "dave"


# A timed-out approval is a failed one, as a denied one.
@pytest.mark.parametrize("case", ["denied_but_typed", "pending"])
def test_ungranted_awx_approval_fails_the_gate(gate_results, case):
    result = gate_results[case]
    assert result["approved_by"] is None and result["source"] is None
    assert "needs an approval" in result["failure"]


def test_approved_by_counts_outside_an_approval_workflow(gate_results):
    assert gate_results["outside_awx_typed"] == {"approved_by": "alice", "source": "extra-var", "failure": None,
                                                 "sql": None}
    assert gate_results["workflow_without_approval_node"]["approved_by"] == "erin"
    assert "needs an approval" in gate_results["outside_awx_nothing"]["failure"]


def test_unreadable_approval_fails_with_the_reason(gate_results):
    result = gate_results["wrong_token"]
    assert result["approved_by"] is None and "HTTP 401" in result["failure"]


def test_the_workflow_carries_the_sql_staging_ran_through_the_approval_to_production(gate_results):
    result = gate_results["sql_handed_on_by_staging"]
    assert result["failure"] is None and result["approved_by"] == "carol"
    assert result["sql"] == {"approved_sql_sha256": "cc" * 32, "ok": True, "differing": [], "source": "awx-workflow"}


def test_production_refuses_sql_that_is_not_what_staging_handed_on_naming_the_revision(gate_results):
    result = gate_results["sql_changed_since_staging"]
    assert "is not the approved SQL" in result["failure"]
    assert "f00d00000001 (alembic/versions/f00d00000001_x.py): its SQL or its file changed" in result["failure"]
    # Inside the workflow a hash typed at launch does not stand in for the one staging handed on.
    typed = gate_results["sql_typed_inside_the_workflow"]
    assert typed["sql"]["source"] == "awx-workflow" and "is not the approved SQL" in typed["failure"]


def test_outside_awx_the_hash_comes_from_the_operator(gate_results):
    assert gate_results["sql_typed_outside_awx"]["failure"] is None
    assert gate_results["sql_typed_outside_awx"]["sql"]["source"] == "extra-var"
    assert "approved_sql_sha256 is not set" in gate_results["sql_not_approved_outside_awx"]["failure"]
