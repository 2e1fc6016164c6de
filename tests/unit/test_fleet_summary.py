"""The fleet summary (module_utils/fleet_summary.py): waves as Ansible makes them, the failure budget as Ansible
applies it, and every database of the fleet in the summary, whatever point the waves reached."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.fleet_summary import (
    budget_exceeded,
    build_summary,
    checked_budget,
    load_reports,
    parse_waves,
    plan_waves,
    play_order,
    render_markdown,
    wave_size,
)

HOSTS = [f"db{i:02d}" for i in range(1, 21)]
FLEET = {"run_id": "20261127T120000Z-abc123", "environment": "production", "operation": "migrate",
         "target_revision": "head", "waves": [1, 4, "100%"], "max_fail_percentage": 0, "started_at": 1000.0,
         "dir": "/r/production/fleet-20261127T120000Z-abc123"}


def hosts() -> list[dict]:
    return [{"host": h, "database": f"tenant_{h}"} for h in HOSTS]


def report(host: str, outcome: str, before: str = "aaaa", after: str = "bbbb", **extra) -> dict:
    return {"outcome": outcome, "database": f"tenant_{host}", "revision_before": before, "revision_after": after,
            "target_revision": "bbbb", "applied": ["bbbb"] if outcome == "migrated" else [],
            "started_at": "2026-11-27T12:00:00Z", "finished_at": "2026-11-27T12:00:08Z",
            "verify": {"revision": after, "schema_diff": []} if outcome == "migrated" else None, **extra}


ROLLED_BACK = {"failure": {"task": "Apply the pending revisions", "msg": "could not create unique index\nDETAIL: dup",
                           "failed_revision": "bbbb"},
               "rollback": {"method": "downgrade", "ok": True, "at_start_revision": True, "revision_after": "aaaa"}}


def record(host: str, outcome: str, finished_at: float) -> dict:
    return {"host": host, "outcome": outcome, "report_dir": f"/r/production/tenant_{host}/run",
            "finished_at": finished_at}


@pytest.mark.parametrize("value, waves", [
    (None, []), ("", []), ([], []),
    ([1, 5, "100%"], [1, 5, "100%"]),
    ("1, 25%", [1, "25%"]),
    (["2", " 50% "], [2, "50%"]),
    (3, [3]),
])
def test_rm_waves_becomes_the_plays_serial(value, waves):
    assert parse_waves(value) == waves


@pytest.mark.parametrize("value", [[0], ["0%"], ["150%"], ["-1"], ["five"], [True], "1, two", [1.5]])
def test_a_wave_size_that_is_not_a_count_or_a_percentage_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="rm_waves: .* is not a wave size"):
        parse_waves(value)


def test_waves_are_cut_as_ansible_cuts_serial_batches():
    # Percentages are of the whole play (at least 1 host); the last size repeats.
    assert wave_size("25%", 20) == 5 and wave_size("1%", 20) == 1 and wave_size(3, 20) == 3
    waves = plan_waves(HOSTS, [1, "25%"])
    assert [len(w) for w in waves] == [1, 5, 5, 5, 4]
    assert waves[0] == ["db01"] and sum(waves, []) == HOSTS
    assert [len(w) for w in plan_waves(HOSTS, [1, 4, "100%"])] == [1, 4, 15]
    assert plan_waves(HOSTS, []) == [HOSTS]
    assert plan_waves(["only"], [1, "25%"]) == [["only"]]


def test_the_play_order_decides_the_canary_and_a_shuffle_is_refused():
    hosts = ["tenant-b", "tenant-c", "tenant-a"]
    assert plan_waves(hosts, [1, "100%"]) == [["tenant-b"], ["tenant-c", "tenant-a"]]
    assert plan_waves(hosts, [1, "100%"], "sorted") == [["tenant-a"], ["tenant-b", "tenant-c"]]
    assert play_order(hosts, "reverse_sorted") == ["tenant-c", "tenant-b", "tenant-a"]
    assert play_order(hosts, "reverse_inventory") == ["tenant-a", "tenant-c", "tenant-b"]
    with pytest.raises(ValueError, match="rm_fleet_order: 'shuffle' leaves the canary to chance"):
        plan_waves(hosts, [1], "shuffle")
    # Never-run waves are listed in the play's order too.
    s = build_summary({**FLEET, "waves": [1, "100%"], "order": "sorted"},
                      [{"host": h, "database": h} for h in hosts], [], [], {}, now=1000.0)
    assert [w["hosts"] for w in s["waves"]] == [["tenant-a"], ["tenant-b", "tenant-c"]]


@pytest.mark.parametrize("failed, size, budget, stops", [
    (0, 5, 0, False),       # nothing failed
    (1, 5, 0, True),        # any failure is over a budget of 0
    (1, 5, 20, False),      # 20 % is not more than 20 %
    (2, 5, "20%", True),    # 40 % is
    (1, 1, None, True),     # without a budget, a wave that fails entirely still stops the waves (Ansible's rule)
    (2, 5, None, False),
    (1, 3, "33", True),     # 33.3 % > 33 %
])
def test_the_failure_budget_stops_the_waves_as_max_fail_percentage_does(failed, size, budget, stops):
    assert budget_exceeded(failed, size, budget) is stops


def test_a_wave_over_the_budget_stops_the_fleet_and_the_rest_are_never_touched():
    started = [{"hosts": ["db01"], "started_at": 1000.0}, {"hosts": HOSTS[1:5], "started_at": 1010.5}]
    records = [record("db01", "migrated", 1010.0), record("db02", "migrated", 1024.0),
               record("db03", "failed-rolled-back", 1025.5), record("db04", "migrated", 1024.0),
               record("db05", "migrated", 1024.0)]
    reports = {"db01": report("db01", "migrated"), "db02": report("db02", "migrated"),
               "db03": report("db03", "failed-rolled-back", after="aaaa", **ROLLED_BACK),
               "db04": report("db04", "migrated"), "db05": report("db05", "migrated")}
    s = build_summary(FLEET, hosts(), started, records, reports, now=1026.0)

    assert s["status"] == "stopped" and "wave 2: 1 of 4 failed" in s["status_reason"]
    assert s["counts"] == {"migrated": 4, "failed-rolled-back": 1, "never-touched": 15}
    assert [d["host"] for d in s["databases"]] == HOSTS  # every database of the fleet, in the play's order
    assert [(w["wave"], w["state"], w["size"]) for w in s["waves"]] == [(1, "done", 1), (2, "done", 4),
                                                                        (3, "never-run", 15)]
    assert s["waves"][0]["duration_s"] == 10.0 and s["waves"][1]["duration_s"] == 15.0
    assert s["waves"][1]["budget_exceeded"] and not s["waves"][0]["budget_exceeded"]
    assert s["waves"][2]["started_at"] is None and s["waves"][2]["duration_s"] is None
    db03 = s["databases"][2]
    assert db03["state"] == "failed-rolled-back" and db03["at_start_revision"] and db03["wave"] == 2
    assert db03["rollback"]["method"] == "downgrade" and db03["report"] == "/r/production/tenant_db03/run/report.md"
    assert s["databases"][0]["verified"] and not db03["verified"]
    assert {d["state"] for d in s["databases"][5:]} == {"never-touched"} and s["databases"][5]["wave"] == 3
    assert s["elapsed_s"] == 26.0 and s["started_at"] == "1970-01-01T00:16:40Z"


def test_after_a_good_wave_the_rest_are_listed_as_not_run_yet():
    started = [{"hosts": ["db01"], "started_at": 1000.0}]
    s = build_summary(FLEET, hosts(), started, [record("db01", "migrated", 1009.0)],
                      {"db01": report("db01", "migrated")}, now=1009.5)
    assert s["status"] == "running" and s["status_reason"] == "waves 2-3 not run yet"
    assert s["counts"] == {"migrated": 1, "never-touched": 19}
    assert [w["size"] for w in s["waves"]] == [1, 4, 15]


def test_a_wave_that_started_shows_its_databases_in_progress():
    started = [{"hosts": ["db01"], "started_at": 1000.0}, {"hosts": HOSTS[1:5], "started_at": 1010.0}]
    s = build_summary(FLEET, hosts(), started, [record("db01", "migrated", 1009.0)],
                      {"db01": report("db01", "migrated")}, now=1011.0)
    assert s["status"] == "running" and "wave 2 of 3 is running" in s["status_reason"]
    assert s["waves"][1]["state"] == "running" and s["waves"][1]["finished_at"] is None
    assert s["counts"] == {"migrated": 1, "in-progress": 4, "never-touched": 15}


def test_every_wave_done_is_finished_even_with_failures_within_the_budget():
    fleet = {**FLEET, "waves": [1, "50%"], "max_fail_percentage": 50}
    small = hosts()[:3]
    started = [{"hosts": ["db01"], "started_at": 1000.0}, {"hosts": ["db02"], "started_at": 1005.0},
               {"hosts": ["db03"], "started_at": 1010.0}]
    # 50% of 3 hosts is one host a wave: three waves, all done.
    records = [record("db01", "migrated", 1004.0), record("db02", "up-to-date", 1006.0),
               record("db03", "migrated", 1015.0)]
    s = build_summary(fleet, small, started, records, {}, now=1016.0)
    assert s["status"] == "finished" and s["counts"] == {"migrated": 2, "up-to-date": 1}
    # Without its report (never written), the run's record still says what happened.
    assert s["databases"][1]["state"] == "up-to-date" and s["databases"][1]["report"] == (
        "/r/production/tenant_db02/run/report.md")


def test_a_failed_database_not_back_where_it_started_is_called_out():
    started = [{"hosts": ["db01"], "started_at": 1000.0}]
    failed = report("db01", "failed", before="aaaa", after="bbbb",
                    failure={"task": "Apply", "msg": "boom", "failed_revision": "cccc"})
    s = build_summary(FLEET, hosts(), started, [record("db01", "failed", 1003.0)], {"db01": failed}, now=1004.0)
    assert s["status"] == "stopped" and "every database of the wave failed" in s["status_reason"]
    assert not s["databases"][0]["at_start_revision"]
    md = render_markdown(s)
    assert "**NOT where it started (`aaaa`): act now**" in md and "No rollback ran" in md


def test_the_markdown_tells_the_waves_with_their_times_and_every_database():
    started = [{"hosts": ["db01"], "started_at": 1000.0}, {"hosts": HOSTS[1:5], "started_at": 1010.0}]
    records = [record(h, "failed-rolled-back" if h == "db03" else "migrated", 1020.0) for h in HOSTS[:5]]
    reports = {h: report(h, "migrated") for h in HOSTS[:5]} | {
        "db03": report("db03", "failed-rolled-back", after="aaaa", **ROLLED_BACK)}
    md = render_markdown(build_summary({**FLEET, "awx_job_id": 42, "awx_workflow_job_id": 40}, hosts(), started,
                                       records, reports, now=1021.0))
    assert md.startswith("# Fleet migrate on production: **STOPPED** with 1 failed")
    assert "| Databases | 20: 4 migrated, 1 FAILED, rolled back to where it started, 15 never touched |" in md
    assert "| 1 | 1 | done | 1970-01-01T00:16:40Z | 1970-01-01T00:17:00Z | 20.0 | 1 migrated |" in md
    assert "| 2 | 4 | done, **stopped the waves** |" in md
    assert "| 3 | 15 | never ran | — | — | — | 15 never touched |" in md
    assert "could not create unique index DETAIL: dup" in md and "Rolled back by downgrade" in md
    assert "where it started" in md and "in workflow job 40" in md
    for h in HOSTS:
        assert f"| `tenant_{h}` | {h} |" in md
    assert "| `tenant_db01` | db01 | 1 | migrated | `aaaa` → `bbbb` | yes | 8.0 |" in md


def test_reports_are_read_from_each_databases_report_directory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps({"outcome": "migrated"}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text("{not json")
    records = [{"host": "a", "report_dir": str(tmp_path / "a")}, {"host": "b", "report_dir": str(tmp_path / "b")},
               {"host": "c", "report_dir": None}, {"host": "d", "report_dir": str(tmp_path / "missing")}]
    assert load_reports(records) == {"a": {"outcome": "migrated"}}


def test_a_failure_that_its_own_transaction_undid_is_not_called_a_rollback():
    started = [{"hosts": ["db01"], "started_at": 1000.0}]
    undone = report("db01", "failed-rolled-back", after="aaaa", failure={"task": "Apply", "msg": "boom"},
                    rollback={"method": "downgrade", "ok": True, "at_start_revision": True, "revision_after": "aaaa",
                              "applied": []})
    md = render_markdown(build_summary(FLEET, hosts(), started, [record("db01", "failed-rolled-back", 1003.0)],
                                       {"db01": undone}, now=1004.0))
    assert "Nothing to roll back (the failed revision's own transaction undid it)" in md
    assert "Rolled back by" not in md


@pytest.mark.parametrize(("value", "budget"), [(0, 0), ("25", 25), ("10%", 10), (100, 100), (None, None)])
def test_a_failure_budget_is_a_whole_percentage(value, budget):
    assert checked_budget(value) == budget


@pytest.mark.parametrize("value", [-5, 150, "abc", 2.5, True])
def test_a_failure_budget_out_of_range_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match="rm_max_fail_percentage"):
        checked_budget(value)
