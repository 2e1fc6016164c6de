"""Jinja filters for the lifecycle playbooks' decisions; the logic is module_utils/lifecycle_rules.py.

    {{ k8s_target_found | k8s_ready_pods }}                     -> {app: {ready: [...], seen: [...]}, db: ...}
    {{ preflight_maintenance_window | maintenance_window }}     -> {open: true, now: 'sat 23:30', describe: ...}
    {{ ansible_failed_task.name | failure_summary(ansible_failed_result) }}
    {{ 'migrate' | success_outcome(dry_run, pending, applied) }} -> migrated / up-to-date / dry-run / ...
    {{ rm_failure | rollback_plan(applied, backup_taken, allow_restore) }}
    {{ k8s_target_saved_replicas | writers_not_back(k8s_target_now) }} -> [{key, value, actual}]
    {{ preflight_result.revisions | sql_approval(sha256, approved_sql_sha256, approved_revisions) }} -> {ok, message}
    {{ preflight_result.revisions | way_back_plan(round_trips, allow_lossy, allow_restore) }} -> per revision
    {{ preview_result.way_back | way_back_rollback(applied) }} -> {method, tables, created, why}
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleFilterError

_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils import lifecycle_rules, way_back  # noqa: E402


def maintenance_window(window, now=None):
    try:
        return lifecycle_rules.maintenance_window(window, now)
    except ValueError as exc:
        raise AnsibleFilterError(f"{exc}. Fix preflight_maintenance_window, e.g. "
                                 "{days: [sat], start: '23:00', end: '01:00'}.") from None


def way_back_plan(revisions, trips, allow_lossy=False, allow_restore=False):
    return way_back.plan(revisions or [], trips or [], allow_lossy=bool(allow_lossy), allow_restore=bool(allow_restore))


class FilterModule:
    def filters(self):
        return {
            "k8s_ready_pods": lifecycle_rules.ready_pods,
            "maintenance_window": maintenance_window,
            "failure_summary": lifecycle_rules.failure_summary,
            "success_outcome": lifecycle_rules.success_outcome,
            "rollback_plan": lifecycle_rules.rollback_plan,
            "writers_not_back": lifecycle_rules.writers_not_back,
            "smoke_verdicts": lifecycle_rules.smoke_verdicts,
            "sql_approval": lifecycle_rules.sql_approval,
            "is_sha256": lifecycle_rules.is_sha256,
            "way_back_plan": way_back_plan,
            "way_back_rollback": way_back.rollback_method,
        }
