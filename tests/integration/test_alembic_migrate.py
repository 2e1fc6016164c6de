"""alembic_migrate run the way Ansible runs it (ad-hoc, real ansible), on a real PostgreSQL."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from chain_copies import BROKEN_REVISION, GOOD_REVISION, HEAD, chain_copy
from support import ROOT, database_exists, revision_of, run_module

pytestmark = pytest.mark.db

CONFIG = str(ROOT / "alembic.ini")


def migrate(url: str, check: bool = False, real: bool = False, **params):
    return run_module("alembic_migrate", {"config": CONFIG, "url": url, **params}, check=check, real=real)


def test_upgrade_to_head_then_second_run_changes_nothing(new_database):
    url = new_database()
    first = migrate(url, real=True)  # this module's run through the real ansible
    assert first.rc == 0, first.output
    assert first.result["changed"] is True
    assert first.result["from_revision"] is None
    assert first.result["to_revision"] == HEAD
    assert first.result["direction"] == "up"
    assert first.result["applied"][0] == "1a0c3e5f7b21" and first.result["applied"][-1] == HEAD
    assert [s["revision"] for s in first.result["steps"]] == first.result["applied"]
    assert revision_of(url) == [HEAD]

    second = migrate(url)
    assert second.rc == 0, second.output
    assert second.result["changed"] is False
    assert second.result["applied"] == [] and second.result["pending"] == []


def test_check_mode_previews_the_sql_and_changes_nothing(new_database):
    url = new_database()
    assert migrate(url, revision="8f1a2b3c4d5e").rc == 0
    plan = migrate(url, check=True)
    assert plan.rc == 0, plan.output
    assert plan.result["changed"] is True
    assert plan.result["pending"] == [HEAD]
    assert "CREATE TABLE user_roles" in plan.result["sql"]
    assert "CREATE TABLE users" not in plan.result["sql"]  # only the pending revisions
    assert revision_of(url) == ["8f1a2b3c4d5e"]
    sql_only = migrate(url, sql=True)
    assert sql_only.result["changed"] is False and "CREATE TABLE user_roles" in sql_only.result["sql"]
    assert revision_of(url) == ["8f1a2b3c4d5e"]


def test_downgrade_is_refused_unless_allowed(new_database):
    url = new_database()
    migrate(url)
    refused = migrate(url, revision="-1")
    assert refused.rc != 0
    assert "downgrade" in refused.result["msg"] and "allow_downgrade" in refused.result["hint"]
    assert revision_of(url) == [HEAD]
    allowed = migrate(url, revision="-1", allow_downgrade=True)
    assert allowed.rc == 0, allowed.output
    assert allowed.result["direction"] == "down" and allowed.result["applied"] == [HEAD]
    assert revision_of(url) == ["8f1a2b3c4d5e"]
    up_one = migrate(url, revision="+1")
    assert up_one.result["applied"] == [HEAD]
    to_base = migrate(url, revision="base", allow_downgrade=True)
    assert to_base.rc == 0 and revision_of(url) == []
    assert len(to_base.result["applied"]) == 7


def test_unknown_revision_names_the_heads(new_database):
    res = migrate(new_database(), revision="deadbeef")
    assert res.rc != 0
    assert "deadbeef" in res.result["msg"] and HEAD in res.result["hint"]


def test_a_second_concurrent_run_is_refused_naming_the_holder(new_database):
    from ansible.module_utils.alembic_session import advisory_lock_key

    url = new_database()
    holder = psycopg2.connect(url)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key("alembic_version"),))
    try:
        blocked = migrate(url)
        assert blocked.rc != 0
        assert "Another migration is running" in blocked.result["msg"]
        assert "pid" in blocked.result["msg"]
        assert revision_of(url) == []

        # With advisory_lock_wait it queues behind the holder and runs once the lock is free.
        threading.Timer(1.5, holder.close).start()
        waited = migrate(url, advisory_lock_wait=30)
        assert waited.rc == 0, waited.output
        assert revision_of(url) == [HEAD]
    finally:
        if not holder.closed:
            holder.close()


def test_a_failing_revision_reports_what_failed_and_where_the_database_is(new_database, tmp_path):
    url = new_database()
    assert migrate(url).rc == 0
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO users (name, email) VALUES ('a', 'a@example.com')")
    conn.close()
    ini = chain_copy(tmp_path, GOOD_REVISION, BROKEN_REVISION)
    res = run_module("alembic_migrate", {"config": str(ini), "url": url})
    assert res.rc != 0
    assert res.result["failed_revision"] == "f00d00000002"
    assert res.result["revision_left"] == "f00d00000001"
    assert "not-null" in res.result["msg"].lower() or "null value" in res.result["msg"].lower()
    assert res.result["applied"] == ["f00d00000001"]
    assert revision_of(url) == ["f00d00000001"]
    # The failed revision's transaction was rolled back: its table does not exist, the data is intact.
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('audit_log'), (SELECT email FROM users)")
        assert cur.fetchone() == (None, "a@example.com")
    conn.close()


def test_lock_timeout_is_retried_then_reported(new_database):
    url = new_database()
    migrate(url, revision="8f1a2b3c4d5e")
    blocker = psycopg2.connect(url)
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE users IN ROW EXCLUSIVE MODE")  # as an open write transaction holds
    try:
        started = time.monotonic()
        res = migrate(url, lock_timeout="100ms", lock_retries=2, lock_retry_delay=0.2)
        assert res.rc != 0
        assert "lock timeout" in res.result["msg"]
        assert res.result["lock_retries_used"] == 2
        assert res.result["revision_left"] == "8f1a2b3c4d5e"
        assert time.monotonic() - started < 60

        threading.Timer(4.0, blocker.rollback).start()  # after ansible has started and hit the lock
        res = migrate(url, lock_timeout="100ms", lock_retries=60, lock_retry_delay=0.2)
        assert res.rc == 0, res.output
        assert res.result["lock_retries_used"] >= 1
        assert revision_of(url) == [HEAD]
    finally:
        blocker.close()


def test_wrong_password_fails_without_showing_it(pg_server, new_database, password_role):
    from support import url_with_credentials

    name, password = password_role
    url = url_with_credentials(new_database(), name, "WrongPassw0rd-xyz")
    res = migrate(url)
    assert res.rc != 0
    assert "password" in res.result["msg"].lower()
    assert "WrongPassw0rd-xyz" not in res.output
    assert password not in res.output


def test_create_database_makes_a_fresh_database_at_the_target(pg_server, target_db):
    url = target_db()
    plan = migrate(url, check=True, create_database=True)
    assert plan.rc == 0, plan.output
    assert plan.result["database_created"] is True and plan.result["pending"][-1] == HEAD
    assert not database_exists(pg_server, url)  # check mode created nothing

    made = migrate(url, create_database=True)
    assert made.rc == 0, made.output
    assert made.result["database_created"] is True and revision_of(url) == [HEAD]
    again = migrate(url, create_database=True)
    assert again.result["changed"] is False and again.result["database_created"] is False


def test_two_real_applies_at_once_one_migrates_and_the_other_is_refused_naming_it(new_database):
    """Two runs of the runner, in two threads, on one database, at the same moment."""
    import threading

    from ansible.module_utils.alembic_runner import MigrationRequest, run
    from ansible.module_utils.operator_error import OperatorError

    url = new_database()
    start = threading.Barrier(2)
    outcomes: list = []

    def apply() -> None:
        start.wait()
        try:
            outcomes.append(run(MigrationRequest(url=url, config=CONFIG)))
        except OperatorError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, OperatorError)]
    assert len(done) == 1 and len(done[0]["applied"]) == 7
    assert len(refused) == 1 and "Another migration is running" in refused[0].message
    assert "held by pid" in refused[0].details["lock_holder"]
    assert revision_of(url) == [HEAD]


def test_a_run_that_planned_before_another_committed_plans_again_under_the_lock(new_database, tmp_path):
    """B plans (7 pending) while A migrates; B waits for the lock, plans again under it, and applies nothing."""
    import threading
    import time

    from ansible.module_utils.alembic_runner import MigrationRequest, inspect_plan, run
    from chain_copies import SLOW_REVISION, chain_copy

    url = new_database()
    ini = str(chain_copy(tmp_path / "chain", SLOW_REVISION))  # its last revision sleeps 2 s
    first = threading.Thread(target=lambda: run(MigrationRequest(url=url, config=ini)))
    first.start()
    time.sleep(0.5)
    plan, _ = inspect_plan(MigrationRequest(url=url, config=ini))
    assert plan.pending  # B's plan, made before A committed
    second = run(MigrationRequest(url=url, config=ini, advisory_lock_wait=60))
    first.join(timeout=120)
    assert second["changed"] is False and second["applied"] == [] and second["pending"] == []
    assert revision_of(url) == ["f00d00000001"]
