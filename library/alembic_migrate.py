#!/usr/bin/python
"""Ansible module: bring a PostgreSQL database to an Alembic revision (thin wrapper)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: alembic_migrate
short_description: Bring a PostgreSQL database to an Alembic revision, safely and idempotently
description:
  - Declarative Alembic for any project. C(revision=head) means "make the database be at head";
    a database already there is left alone and the task reports C(changed=false).
  - The plan runs as the project's own C(alembic upgrade)/C(alembic downgrade) runs it - one run of its
    C(env.py), from the directory of its C(alembic.ini), with the project's own transaction settings
    (one transaction for the whole plan, or one per revision when env.py sets C(transaction_per_migration);
    the release_manager chain does). Async env.py files (C(postgresql+asyncpg://)) run as they are.
  - Around that run, a PostgreSQL advisory lock is held on a separate session, so two runs can never
    migrate one database at once; the plan is made again under the lock, and a plan that differs from
    O(expected_pending) (the database moved while the run waited) is refused.
  - Every connection the run opens starts with O(lock_timeout) and O(statement_timeout). A revision that
    times out waiting for a lock is retried (the run continues from where the database stopped), so a
    migration queued behind a long transaction stalls live traffic for at most O(lock_timeout) per attempt.
  - The result lists each revision applied with its duration (Alembic's C(on_version_apply) hook). A failure
    names the revision that failed, or env.py when it failed before any revision ran, and the revision the
    database is really left at (read back from the version table - back at the start for a one-transaction
    plan, the last good revision for one transaction per revision).
  - In check mode (or with O(sql=true)) nothing is changed; the module returns what would run,
    including the offline SQL of exactly the pending revisions (the runbook's
    C(alembic upgrade head --sql)), revision by revision, with the sha256 an approval pins (RV(sql_sha256)).
    The C(migration_lint) module lints it.
  - The SQL is pinned. With O(expected_sql), the SQL is rendered again under the migration lock and a revision
    whose SQL is not the one previewed (its file was edited since) is refused before anything runs.
  - Each applied revision file's sha256 is kept with the database, in the comment of the version table (which
    the app's C(alembic revision --autogenerate) never compares, and which C(pg_dump) keeps). Check mode
    compares the applied revisions' files with it (RV(checksums)); a run records the revisions it applied and
    any applied before checksums were kept.
  - Runs where the project's migrations live (the runner, or the app pod through the
    C(kubernetes.core.kubectl) connection). Needs C(alembic), C(sqlalchemy) and C(psycopg2) there (the
    driver the app uses, e.g. asyncpg, too).
version_added: "1.0.0"
options:
  config:
    description:
      - Path of the project's C(alembic.ini). Relative paths inside it resolve against its directory.
    type: path
  script_location:
    description:
      - The migrations directory; overrides the ini's C(script_location).
      - Either I(config) or I(script_location) is required.
    type: path
  revision:
    description:
      - Where the database should be. C(head), C(heads), C(base), a revision id or unique prefix,
        C(BRANCH@head), or relative C(-N) / C(+N) from the current revision.
    type: str
    default: head
  allow_downgrade:
    description:
      - Allow a target below the current revision. Without it a downgrade fails and changes nothing.
    type: bool
    default: false
  sql:
    description:
      - Only return the offline SQL for the pending revisions; change nothing.
    type: bool
    default: false
  lock_timeout:
    description:
      - PostgreSQL C(lock_timeout) for the migrating session (C(200ms), C(2s)). Empty leaves the server's.
    type: str
  statement_timeout:
    description:
      - PostgreSQL C(statement_timeout) for the migrating session (C(15min)).
    type: str
  lock_retries:
    description:
      - How many times a revision that hit I(lock_timeout) is retried (its transaction was rolled back).
    type: int
    default: 3
  lock_retry_delay:
    description:
      - Seconds to wait before retrying after a lock timeout.
    type: float
    default: 1.0
  advisory_lock:
    description:
      - Hold a PostgreSQL advisory lock for the whole run so concurrent runs cannot migrate at once.
    type: bool
    default: true
  advisory_lock_wait:
    description:
      - Seconds to wait for another run's advisory lock. C(0) fails at once, naming the other session.
    type: float
    default: 0
  x_arguments:
    description:
      - Values for C(-x key=value), read by the project's C(env.py) with C(context.get_x_argument()).
    type: dict
    default: {}
  expected_pending:
    description:
      - The revisions the run was previewed (and approved) with, in order. Under the migration lock the plan
        is made again; when it would run anything else (another run moved the database meanwhile), the task
        fails and changes nothing. An empty plan (someone else did the work) is fine. Omit to skip the check.
    type: list
    elements: str
  not_after:
    description:
      - An ISO 8601 time (UTC), e.g. the end of the maintenance window. When the run gets the migration lock
        after it, nothing is applied and the task fails. Revisions already running are not interrupted.
    type: str
  compare_models:
    description:
      - After the run (in check mode, when nothing is pending), compare the app's models with the database the
        way C(alembic check) does - the project's env.py, its C(target_metadata), C(include_object),
        C(compare_type) - and return the differences in RV(models). Read-only; the task does not fail on them.
      - The models describe the head, so a database elsewhere is reported as not checked, as is a project
        whose env.py exposes no C(target_metadata).
    type: bool
    default: false
  create_database:
    description:
      - Create the database first when it does not exist (for a fresh or scratch database; needs
        CREATEDB). In check mode a missing database is planned from base and not created.
    type: bool
    default: false
  expected_sql:
    description:
      - The approval hash of each pending revision as previewed, a dict of revision to sha256 (the
        RV(revisions[].approval_sha256) of a check-mode run). The SQL is rendered again under the migration
        lock; a revision whose hash differs is refused (the task fails, naming it) and nothing runs.
      - In check mode the check is made on the preview too.
    type: dict
  expected_files:
    description:
      - The sha256 of each pending revision's file as previewed (RV(revisions[].file_sha256)); with it a refusal says
        whether the file changed or only its SQL did (the clock, env.py or another module).
    type: dict
  record_checksums:
    description:
      - Keep the sha256 of each applied revision file in the version table's comment (after any text of the
        team's own), so a revision edited after it was applied is found (RV(checksums)).
    type: bool
    default: true
  accept_edited:
    description:
      - Applied revisions whose edited files were reviewed and accepted; their new checksum is recorded.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    details: Returns the plan and the offline SQL preview; touches nothing.
extends_documentation_fragment:
  - connection
  - connection.version_table
notes:
  - O(url) overrides the project's C(sqlalchemy.url).
requirements:
  - alembic
  - sqlalchemy
  - psycopg2
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Upgrade to head, waiting at most 2 s per lock
  alembic_migrate:
    config: /app/alembic.ini
    url: "{{ rm_database_url }}"
    revision: head
    lock_timeout: 2s
    statement_timeout: 15min

- name: Preview what would run (the runbook's `alembic upgrade head --sql`)
  alembic_migrate:
    config: /app/alembic.ini
    url: "{{ rm_database_url }}"
  check_mode: true
  register: plan

- name: Go down one revision (rollback)
  alembic_migrate:
    config: /app/alembic.ini
    url: "{{ rm_database_url }}"
    revision: "-1"
    allow_downgrade: true
"""

RETURN = r"""
from_revision:
  description: Revision(s) before the run, comma-joined; null at base.
  returned: always
  type: str
  sample: 8f1a2b3c4d5e
to_revision:
  description: Revision(s) after the run (unchanged in check mode).
  returned: always
  type: str
  sample: 9c2b3f1a4e5d
target_revision:
  description: The target resolved to ids (null for base).
  returned: always
  type: str
  sample: 9c2b3f1a4e5d
direction:
  description: C(up), C(down) or C(none).
  returned: always
  type: str
  sample: up
pending:
  description: Revisions that would run (check mode) or ran, in order.
  returned: always
  type: list
  elements: str
  sample: [9c2b3f1a4e5d]
applied:
  description: Revisions applied by this run, in order.
  returned: always
  type: list
  elements: str
heads:
  description: Head revisions of the script directory.
  returned: always
  type: list
  elements: str
current:
  description: Revision(s) the database is at after the run.
  returned: always
  type: list
  elements: str
steps:
  description:
    - One entry per applied revision with C(revision), C(description), C(direction), C(duration_s),
      C(lock_retries).
  returned: always
  type: list
  elements: dict
sql:
  description: Offline SQL of the pending revisions (check mode or I(sql=true)); empty when it cannot render.
  returned: always
  type: str
sql_error:
  description: Why the offline SQL could not be rendered (a revision reads the database while it runs).
  returned: when the offline SQL could not be rendered
  type: str
sql_sha256:
  description:
    - The plan's approval hash - the sha256 of the plan's listing in C(sha256sum) format (RV(sha256sums)). Null
      when nothing is pending.
  returned: check mode or sql
  type: str
  sample: 3f5d0c0b8e4f9a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c
sha256sums:
  description:
    - The plan's listing in C(sha256sum) format, per revision in the order they run - its SQL (C(<rev>.sql)) and its
      file (C(<rev>.py)), or only its file when its SQL is not rendered or not the same twice; its own sha256 is
      RV(sql_sha256).
  returned: check mode or sql
  type: str
revisions:
  description:
    - One entry per pending revision, in the order they run, with C(revision), C(description), C(path) (from the
      ini's directory), C(file_sha256), C(sql) (its offline SQL), C(sql_file) (the name its SQL is saved under),
      C(sql_sha256), C(approval_sha256) (the hash of its lines in RV(sha256sums)), C(pinned_to) (C(sql and file), or
      C(file:) and why), C(source) (the file's text), C(downgrade) (C(ok), C(empty), C(raises), C(missing) or
      C(unknown)) and, in check mode, C(downgrade_sql) and C(downgrade_error) (its way back, offline).
  returned: check mode or sql
  type: list
  elements: dict
checksums:
  description:
    - The applied revisions' files against the checksums kept with the database - C(matching) (how many
      match a record), C(missing) (applied revisions without one), C(edited) (each with C(revision), C(path),
      C(recorded), C(actual)). After a run also C(written), and the revisions C(recorded), C(backfilled),
      C(accepted) or C(removed) by it, or a C(reason) it could not write them.
  returned: when the database exists
  type: dict
duration_s:
  description: Wall time of the task in seconds.
  returned: always
  type: float
lock_retries_used:
  description: Lock timeouts retried in total.
  returned: always
  type: int
failed_revision:
  description: The revision that failed (null when env.py failed before any revision ran).
  returned: failure during apply
  type: str
rolled_back:
  description: Revisions that ran in the failed run but were rolled back with its transaction.
  returned: failure during apply
  type: list
  elements: str
revision_left:
  description: The revision the database is at after a failure.
  returned: failure during apply
  type: str
models:
  description:
    - With O(compare_models), what C(alembic check) found - C(checked) (false with a C(reason) when the
      database is not at the head or env.py exposes no models), C(diffs) (one sentence per difference).
  returned: when compare_models
  type: dict
  sample: {checked: true, reason: null, diffs: ["index ix_users_email on users is in the models, not in the database"]}
database_created:
  description: Whether the database was created (or would be, in check mode).
  returned: always
  type: bool
url:
  description: The database URL with its password masked.
  returned: always
  type: str
"""

from ansible.module_utils.alembic_runner import MigrationRequest, run, safe_result
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC, VERSION_TABLE_SPEC,
    config={"type": "path"},
    script_location={"type": "path"},
    revision={"type": "str", "default": "head"},
    allow_downgrade={"type": "bool", "default": False},
    sql={"type": "bool", "default": False},
    lock_timeout={"type": "str"},
    statement_timeout={"type": "str"},
    lock_retries={"type": "int", "default": 3},
    lock_retry_delay={"type": "float", "default": 1.0},
    advisory_lock={"type": "bool", "default": True},
    advisory_lock_wait={"type": "float", "default": 0},
    x_arguments={"type": "dict", "default": {}},
    create_database={"type": "bool", "default": False},
    expected_pending={"type": "list", "elements": "str"},
    not_after={"type": "str"},
    compare_models={"type": "bool", "default": False},
    expected_sql={"type": "dict"},
    expected_files={"type": "dict"},
    record_checksums={"type": "bool", "default": True},
    accept_edited={"type": "list", "elements": "str", "default": []},
)


def _message(result: dict) -> str:
    if result["applied"]:
        return (f"{result['direction'].capitalize()}graded {result['from_revision'] or 'base'} -> "
                f"{result['to_revision'] or 'base'}: {', '.join(result['applied'])} in {result['duration_s']} s")
    if result["pending"]:
        return f"Would run {len(result['pending'])} revision(s) {result['direction']}: {', '.join(result['pending'])}"
    return f"Already at {result['from_revision'] or 'base'}; nothing to do"


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("config", "script_location")],
        supports_check_mode=True,
    )
    p = module.params

    def work(conn) -> dict:
        req = MigrationRequest(
            url=p["url"], conn=conn, config=p["config"], script_location=p["script_location"], revision=p["revision"],
            allow_downgrade=p["allow_downgrade"], lock_timeout=p["lock_timeout"] or None,
            statement_timeout=p["statement_timeout"] or None, lock_retries=p["lock_retries"],
            lock_retry_delay=p["lock_retry_delay"], advisory_lock=p["advisory_lock"],
            advisory_lock_wait=p["advisory_lock_wait"], version_table=p["version_table"],
            x_arguments={str(k): str(v) for k, v in p["x_arguments"].items()},
            create_database=p["create_database"], expected_pending=p["expected_pending"],
            not_after=p["not_after"] or None, compare_models=p["compare_models"],
            expected_sql={str(k): str(v) for k, v in p["expected_sql"].items()} if p["expected_sql"] else None,
            expected_files={str(k): str(v) for k, v in (p["expected_files"] or {}).items()},
            record_checksums=p["record_checksums"], accept_edited=p["accept_edited"],
        )
        result = safe_result(run(req, check=module.check_mode, sql_only=p["sql"]), req.conn)
        result["msg"] = _message(result)
        if result.get("sql_error"):
            module.warn(result["sql_error"])
        return result

    run_request(module, work, what="Alembic", urls=(p["url"],))


if __name__ == "__main__":
    main()
