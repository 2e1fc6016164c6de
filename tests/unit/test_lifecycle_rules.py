"""The playbooks' decisions, as plain functions: maintenance window, Ready pods, failures, outcomes, rollback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ansible.module_utils.lifecycle_rules import (
    failure_summary,
    maintenance_window,
    ready_pods,
    rollback_plan,
    success_outcome,
    writers_not_back,
)

SAT = datetime(2026, 11, 28, tzinfo=UTC)  # a Saturday


def at(day_offset: int, hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return SAT.replace(day=SAT.day + day_offset, hour=hours, minute=minutes)


@pytest.mark.parametrize("now, expected", [
    (at(0, "23:00"), True), (at(0, "23:59"), True), (at(1, "00:30"), True),  # sat 23:00 -> sun 01:00
    (at(1, "01:00"), False), (at(0, "22:59"), False), (at(-1, "23:30"), False),  # friday's night is not in
    (at(1, "23:30"), False), (at(2, "00:30"), False),  # sunday night is not a saturday start
])
def test_a_window_across_midnight_belongs_to_the_day_it_starts(now, expected):
    assert maintenance_window({"days": ["sat"], "start": "23:00", "end": "01:00"}, now)["open"] is expected


def test_a_window_within_a_day_and_an_empty_window():
    window = {"days": ["mon", "Tuesday"], "start": "02:00", "end": "05:00"}
    assert maintenance_window(window, at(2, "03:00"))["open"]  # monday
    assert not maintenance_window(window, at(2, "05:00"))["open"]
    assert not maintenance_window(window, at(0, "03:00"))["open"]  # saturday
    assert maintenance_window({}, at(0, "12:00"))["open"]
    assert maintenance_window({"start": "00:00", "end": "24:00"}, at(0, "23:59"))["open"]
    assert "ends the next day" in maintenance_window({"start": "23:00", "end": "01:00"}, at(0, "12:00"))["describe"]


@pytest.mark.parametrize("window, words", [
    ({"start": "25:00"}, "not a time of day"), ({"start": "9"}, "not HH:MM"), ({"days": ["someday"]}, "mon..sun"),
])
def test_a_malformed_window_is_refused(window, words):
    with pytest.raises(ValueError, match=words):
        maintenance_window(window, at(0, "12:00"))


def pod(name, phase="Running", ready=True, leaving=False):
    meta = {"name": name, **({"deletionTimestamp": "now"} if leaving else {})}
    return {"metadata": meta, "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_only_running_ready_pods_that_are_not_leaving_count():
    found = {"results": [
        {"item": {"role": "app"}, "resources": [pod("b"), pod("a", ready=False), pod("c", leaving=True),
                                                pod("d", phase="Pending")]},
        {"item": {"role": "db"}, "skipped": True},
    ]}
    pods = ready_pods(found)
    assert pods == {"app": {"ready": ["b"], "seen": ["a (Running, not Ready)", "b (Running, Ready)",
                                                     "c (Running, Ready, terminating)", "d (Pending, Ready)"]}}


def test_a_failed_loop_is_summarised_item_by_item():
    result = {"msg": "One or more items failed", "results": [
        {"item": {"role": "app"}, "failed": True, "msg": "Invalid kube-config file"},
        {"item": {"role": "db"}, "failed": False}]}
    summary = failure_summary("Find the pods", result)
    assert summary["msg"] == "app: Invalid kube-config file" and summary["task"] == "Find the pods"
    other_run = failure_summary(None, {"msg": "x", "failed_revision": "r1", "lock_holder": "pid 7"})
    assert other_run["lock_holder"] == "pid 7" and other_run["task"] == "?"


@pytest.mark.parametrize("operation, dry_run, pending, applied, outcome", [
    ("migrate", False, [], None, "up-to-date"), ("migrate", True, ["a"], None, "dry-run"),
    ("migrate", False, ["a"], ["a"], "migrated"), ("migrate", False, ["a"], [], "up-to-date"),
    ("rollback", False, ["a"], ["a"], "rolled-back"), ("backup", False, [], None, "backed-up"),
    ("restore", True, [], None, "dry-run"), ("drill", False, [], None, "drill-passed"),
])
def test_success_outcomes(operation, dry_run, pending, applied, outcome):
    assert success_outcome(operation, dry_run, pending, applied) == outcome


def test_rollback_undoes_only_this_runs_work_and_never_restores_over_another_run():
    plan = rollback_plan({"failed_revision": "b"}, [], True, True)
    assert (plan["roll_back"], plan["restore_allowed"], plan["method"]) == (True, True, "downgrade")
    assert plan["reason"].startswith("this run applied revisions")
    other = rollback_plan({"lock_holder": "pid 9", "failed_revision": None}, [], True, True)
    assert not other["roll_back"] and not other["restore_allowed"] and "another migration" in other["reason"]
    assert not rollback_plan({}, [], True, True)["roll_back"]  # a gate failed: nothing to undo
    assert not rollback_plan({}, ["a"], False, True)["roll_back"]  # no backup, no rollback
    assert not rollback_plan({}, ["a"], True, False)["restore_allowed"]


def test_rollback_follows_the_way_back_of_the_applied_revisions():
    tables = {"method": "restore-tables", "tables": ["users"], "created": ["prefs"], "why": "a1 raises"}
    plan = rollback_plan({}, ["a1"], True, False, tables)
    assert plan["roll_back"] and plan["method"] == "restore-tables" and plan["tables"] == ["users"]
    forward = rollback_plan({}, ["a1"], True, True, {"method": "forward-fix", "why": "lossy, not allowed"})
    assert not forward["roll_back"] and "forward fix: lossy, not allowed" in forward["reason"]


def test_writers_not_back_compares_the_api_with_the_saved_counts():
    found = {"results": [{"item": {"key": "w1"}, "resources": [{"spec": {"replicas": 3}}]},
                         {"item": {"key": "w2"}, "resources": [{"spec": {"replicas": 0}}]},
                         {"item": {"key": "w3"}, "resources": []}]}
    assert writers_not_back({"w1": 3, "w2": "2", "w3": 1}, found) == [
        {"key": "w2", "value": 2, "actual": 0}, {"key": "w3", "value": 1, "actual": None}]
