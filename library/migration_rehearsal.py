#!/usr/bin/python
"""Ansible module: rehearse a plan on a scratch database (thin wrapper over module_utils/rehearsal.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: migration_rehearsal
short_description: Rehearse pending Alembic revisions on a scratch database - the app's queries and the way back
description:
  - Takes a new scratch database (O(url)) to the live database's revision (O(start)), then up the pending
    revisions to O(target) one at a time, recording the schema after each.
  - After each revision it runs C(PREPARE) (never C(EXECUTE)) on the queries the running app issues, taken
    from the live database's C(pg_stat_statements) (O(live_url), top O(stat_statements_limit) by calls) and
    from the app's query files (O(query_files)). A query that prepared at the start and no longer does names
    the revision that breaks the app version still running (expand/contract).
  - At the target it compares the app's models with the schema (Alembic's C(alembic check)).
  - Then it walks every downgrade from the top and compares the schema each leaves with the one recorded on
    the way up; a downgrade that fails or does not give the schema back is reported per revision.
  - The scratch database ends at O(target). Only the scratch database is written to; the live database is only
    read (C(pg_stat_statements)).
  - Runs where the project's migrations live (the runner, or the app pod).
version_added: "1.0.0"
options:
  url:
    description:
      - The scratch database (new and empty, or at O(start)). Never the live database.
    type: str
    required: true
  live_url:
    description:
      - The live database, read for its C(pg_stat_statements) (when the extension is installed there).
    type: str
  config:
    description: Path of the project's C(alembic.ini).
    type: path
  script_location:
    description: The migrations directory (overrides the ini's).
    type: path
  version_table:
    description: Alembic's version table.
    type: str
    default: alembic_version
  x_arguments:
    description: Values for C(-x key=value), read by the project's env.py.
    type: dict
    default: {}
  start:
    description: The live database's revision(s), comma-joined; empty for base.
    type: str
  target:
    description: The revision the plan goes to; empty for base.
    type: str
  query_files:
    description:
      - The app's query files (SQL, statements separated by semicolons), where the migrations run.
    type: list
    elements: path
    default: []
  stat_statements_limit:
    description: How many of the live database's most called statements to check; C(0) reads none.
    type: int
    default: 200
  walk_limit:
    description:
      - More pending revisions than this are applied in one step (no per-revision query attribution, no
        per-revision round trip).
    type: int
    default: 25
  compare_models:
    description: Compare the app's models with the schema at the target (C(alembic check)).
    type: bool
    default: true
  recreate:
    description:
      - Allow the rehearsal to drop and create its scratch database again, when the chain can only be applied in one
        run (an enum type Alembic creates is remembered only within a run) and the walk one revision at a time
        failed. Never a database named in O(protect).
    type: bool
    default: false
  protect:
    description: Database names the rehearsal never drops (the live database's).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: none
    details: It builds a scratch database; the preview skips it in check mode.
requirements:
  - alembic
  - sqlalchemy
  - psycopg2
  - pglast
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Rehearse the plan on the scratch reference database
  migration_rehearsal:
    url: "{{ rm_database_url | pg_with_database('release_manager_rm_ref_x1') }}"
    live_url: "{{ rm_database_url }}"
    config: /app/alembic.ini
    start: 8f1a2b3c4d5e
    target: 9c2b3f1a4e5d
    query_files: [/app/queries.sql]
  register: rehearsal
"""

RETURN = r"""
duration_s:
  description: Wall time of the whole rehearsal, in seconds.
  returned: always
  type: float
round_trips:
  description:
    - Per revision, C(round_trip) (C(ok), C(differs), C(failed) or C(not proven)) and C(detail) (the schema
      differences, the error, or why it was not walked).
  returned: always
  type: list
  elements: dict
queries:
  description:
    - C(checked) (how many prepared at the start), C(not_checkable) (queries that do not prepare at the start
      either), C(broken) (each with C(query), C(revision) responsible, C(error), C(sqlstate), C(source)),
      C(sources) (where they came from, and why C(pg_stat_statements) was not read when it was not).
  returned: always
  type: dict
models:
  description: What C(alembic check) found at the target - C(checked), C(reason), C(diffs).
  returned: always
  type: dict
at_target:
  description: Whether the scratch database is back at the target after the walk down.
  returned: always
  type: bool
pending:
  description: The revisions rehearsed, in the order they run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC,
    VERSION_TABLE_SPEC,
    live_url={"type": "str", "no_log": True},
    config={"type": "path"},
    script_location={"type": "path"},
    x_arguments={"type": "dict", "default": {}},
    start={"type": "str"},
    target={"type": "str"},
    query_files={"type": "list", "elements": "path", "default": []},
    stat_statements_limit={"type": "int", "default": 200},
    walk_limit={"type": "int", "default": 25},
    compare_models={"type": "bool", "default": True},
    recreate={"type": "bool", "default": False},
    protect={"type": "list", "elements": "str", "default": []},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_one_of=[("config", "script_location")])
    p = module.params

    def work(conn, live) -> dict:
        from ansible.module_utils.rehearsal import RehearsalRequest, collect_queries, rehearse

        if live is not None and live.dbname == conn.dbname and live.where == conn.where:
            from ansible.module_utils.operator_error import OperatorError

            raise OperatorError("The rehearsal's url is the live database.", "Pass a new scratch database as url.")
        queries, sources = collect_queries(live, p["query_files"], p["stat_statements_limit"])
        req = RehearsalRequest(
            url=p["url"], conn=conn, config=p["config"], script_location=p["script_location"],
            version_table=p["version_table"], x_arguments={str(k): str(v) for k, v in p["x_arguments"].items()},
            start=p["start"] or None, target=p["target"] or None, queries=queries, walk_limit=p["walk_limit"],
            compare_models=p["compare_models"], recreate=p["recreate"],
            protect=tuple(p["protect"]) + ((live.dbname,) if live is not None else ()))
        result = rehearse(req)
        result["queries"]["sources"] = sources
        broken = result["queries"]["broken"]
        trips = [t for t in result["round_trips"] if t["round_trip"] in ("failed", "differs")]
        result.update(changed=True, msg=(f"Rehearsed {len(result['pending'])} revision(s): {len(broken)} app "
                                         f"query(ies) broken, {len(trips)} downgrade(s) that do not go back."))
        return result

    run_request(module, work, what="The rehearsal", urls=(p["url"], p["live_url"]))


if __name__ == "__main__":
    main()
