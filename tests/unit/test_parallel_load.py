"""The parallel load's plan, without a server: which jobs may run side by side, in which order, with which
session settings (the load itself is tested against a real server in tests/integration/test_pg_restore.py)."""

from __future__ import annotations

from ansible.module_utils.parallel_load import Job, Planner, Scheduler, conflicts
from ansible.module_utils.plain_dump import CopyChunk, Script


def job(kind: str, locks: dict | None, label: str = "") -> Job:
    return Job(kind, (b"x",) if kind == "copy" else b"x", label or kind, locks=locks)


def test_which_jobs_may_run_side_by_side():
    rows_a, rows_b = job("copy", {b"t": "copy"}), job("copy", {b"t": "copy"})
    index, other_index = job("sql", {b"t": "index"}), job("sql", {b"t": "index"})
    primary_key = job("sql", {b"t": "exclusive"})
    foreign_key = job("sql", {b"u": "exclusive", b"t": "exclusive"})
    setval, script = job("sql", {}), job("script", None)
    assert not conflicts(rows_a, rows_b)  # one table's rows on several sessions
    assert not conflicts(index, other_index)  # CREATE INDEX takes a SHARE lock
    assert conflicts(rows_a, index) and conflicts(primary_key, index) and conflicts(primary_key, rows_a)
    assert conflicts(foreign_key, index) and not conflicts(foreign_key, job("copy", {b"v": "copy"}))
    assert not conflicts(setval, primary_key) and conflicts(script, setval) and conflicts(rows_a, script)


def runnable_labels(scheduler: Scheduler) -> list[str]:
    """Take every job that may start now (without finishing any)."""
    taken = []
    while (found := scheduler._runnable()) is not None:
        scheduler.waiting.remove(found)
        scheduler.running.append(found)
        scheduler.phases.setdefault(found.phase, [0.0, 0.0])
        taken.append(found.label)
    return taken


def test_a_later_job_waits_only_for_the_earlier_jobs_it_conflicts_with():
    scheduler = Scheduler()
    jobs = [job("script", None, "schema"), job("copy", {b"t": "copy"}, "t rows 1"),
            job("copy", {b"t": "copy"}, "t rows 2"), job("copy", {b"u": "copy"}, "u rows"),
            job("sql", {b"t": "exclusive"}, "t pk"),
            job("sql", {b"t": "index"}, "t index"), job("sql", {b"u": "index"}, "u index"),
            job("sql", {b"u": "exclusive", b"t": "exclusive"}, "u fk"), job("script", None, "tail")]
    for each in jobs:
        scheduler.add(each)
    by_label = {j.label: j for j in jobs}
    assert runnable_labels(scheduler) == ["schema"]
    scheduler.done(by_label["schema"])
    assert runnable_labels(scheduler) == ["t rows 1", "t rows 2", "u rows"]
    scheduler.done(by_label["u rows"])
    assert runnable_labels(scheduler) == ["u index"]  # u's rows are in; t's still loading
    scheduler.done(by_label["t rows 1"])
    scheduler.done(by_label["t rows 2"])
    assert runnable_labels(scheduler) == ["t pk"]  # the index waits for the constraint's exclusive lock
    scheduler.done(by_label["t pk"])
    scheduler.done(by_label["u index"])
    assert runnable_labels(scheduler) == ["t index"]  # the foreign key waits for every build on its tables
    scheduler.done(by_label["t index"])
    assert runnable_labels(scheduler) == ["u fk"]
    scheduler.done(by_label["u fk"])
    assert runnable_labels(scheduler) == ["tail"]


PRE_DATA = (b"--\n-- PostgreSQL database dump\n--\n\n\\restrict k3y\n\nSET statement_timeout = 0;\n"
            b"SELECT pg_catalog.set_config('search_path', '', false);\n\n"
            b"--\n-- Name: t; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE public.t (id int);\n"
            b"ALTER TABLE public.t OWNER TO app;\n\n\nSET default_tablespace = '';\n\n")
POST_DATA = (b"--\n-- Name: small_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n"
             b"ALTER TABLE ONLY public.small\n    ADD CONSTRAINT small_pkey PRIMARY KEY (id);\n\n\n"
             b"--\n-- Name: t_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n"
             b"ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n"
             b"--\n-- Name: t trg; Type: TRIGGER; Schema: public; Owner: app\n--\n\n"
             b"CREATE TRIGGER trg AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n\n"
             b"--\n-- Name: TABLE t; Type: ACL; Schema: public; Owner: app\n--\n\n"
             b"GRANT SELECT ON TABLE public.t TO reporting;\n\n\n"
             b"--\n-- Name: u u_t; Type: FK CONSTRAINT; Schema: public; Owner: app\n--\n\n"
             b"ALTER TABLE ONLY public.u\n    ADD CONSTRAINT u_t FOREIGN KEY (t_id) REFERENCES public.t(id);\n\n\n"
             b"\\unrestrict k3y\n")


def test_the_plan_keeps_dump_order_where_it_matters_and_the_session_settings_in_force():
    planner = Planner(no_owner=True)
    (schema,) = planner.script_jobs(Script(PRE_DATA, pre_data=True))
    assert schema.single_transaction and b"OWNER TO" not in schema.payload and b"CREATE TABLE" in schema.payload
    rows = planner.copy_job(CopyChunk(b"public.t", b"COPY public.t (id) FROM stdin", (b"1\n", b"2\n")))
    planner.copy_job(CopyChunk(b"public.small", b"COPY public.small (id) FROM stdin", (b"1\n",)))
    assert rows.settings == (b"SET statement_timeout = 0;", b"SELECT pg_catalog.set_config('search_path', '', false);",
                             b"SET default_tablespace = '';")
    after = planner.ordered(planner.script_jobs(Script(POST_DATA)))
    # Each primary key: its unique index built beside the table's other indexes (biggest table first), then
    # the constraint taking it, right after its table's builds.
    assert [j.kind for j in after] == ["sql", "sql", "sql", "sql", "script"]
    assert [j.locks for j in after[:4]] == [{b"public.t": "index"}, {b"public.t": "exclusive"},
                                            {b"public.small": "index"}, {b"public.small": "exclusive"}]
    assert after[0].payload == b"CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id);"
    assert after[1].payload == b"ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey;"
    trigger_and_grant = after[4].payload
    assert trigger_and_grant.startswith(b"\\restrict k3y\nSET statement_timeout = 0;")
    assert b"CREATE TRIGGER" in trigger_and_grant and b"GRANT" not in trigger_and_grant  # no_owner
    # The last foreign key shares its entry with psql's \unrestrict line: it runs in the script, in order.
    assert trigger_and_grant.endswith(b"REFERENCES public.t(id);\n\n\n\\unrestrict k3y\n")


def test_a_key_is_split_only_in_its_plainest_form_on_a_table_that_got_rows():
    pre = PRE_DATA + (b"--\n-- Name: m; Type: TABLE; Schema: public; Owner: app\n--\n\n"
                      b"CREATE TABLE public.m (\n    id integer NOT NULL\n)\nPARTITION BY RANGE (id);\n\n\n")
    planner = Planner(no_owner=True)
    planner.script_jobs(Script(pre, pre_data=True))
    assert planner.partitioned == {b"public.m"}
    for table in (b"public.t", b"public.m", b'"Odd ""Name"""'):
        planner.copy_job(CopyChunk(table, b"COPY " + table + b" (id) FROM stdin", (b"1\n",)))

    def key(table: bytes, clause: bytes) -> bytes:
        return (b"--\n-- Name: k; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n"
                b"ALTER TABLE ONLY " + table + b"\n    ADD CONSTRAINT k " + clause + b";\n\n\n")
    post = (key(b'"Odd ""Name"""', b'UNIQUE ("a b", c)') + key(b"public.m", b"PRIMARY KEY (id)")
            + key(b"public.t", b"PRIMARY KEY (id) INCLUDE (v)") + key(b"public.t", b"UNIQUE (v) DEFERRABLE")
            + key(b"public.empty", b"PRIMARY KEY (id)"))
    jobs = planner.script_jobs(Script(post))
    assert [j.payload if j.kind == "sql" and j.label.endswith("(its index)") or j.after_builds else j.locks
            for j in jobs] == [
        b'CREATE UNIQUE INDEX k ON "Odd ""Name""" USING btree ("a b", c);',
        b'ALTER TABLE ONLY "Odd ""Name"""\n    ADD CONSTRAINT k UNIQUE USING INDEX k;',
        {b"public.m": "exclusive"}, {b"public.t": "exclusive"}, {b"public.t": "exclusive"},
        {b"public.empty": "exclusive"}]  # partitioned, INCLUDE, DEFERRABLE, no rows: as pg_dump wrote them



def test_binary_rows_are_known_by_the_name_pg_dump_wrote_so_the_builds_after_them_wait(tmp_path):
    """rows.json quotes every name ("public"."system_user"); the schema's pg_dump wrote public."system_user" and
    public.items: the rows' locks use those, so the key split and the builds see the table that got rows."""
    from ansible.module_utils.binary_rows import BinaryRows, BinaryTable

    schema = (b"--\n-- Name: items; Type: TABLE; Schema: public; Owner: o\n--\n\n"
              b"CREATE TABLE public.items (\n    id integer\n);\n\n"
              b'--\n-- Name: system_user; Type: TABLE; Schema: public; Owner: o\n--\n\n'
              b'CREATE TABLE public."system_user" (\n    id integer\n);\n\n')
    rows = BinaryRows(tmp_path, "UTF8", [
        BinaryTable('"public"."items"', ['"id"'], estimated_rows=10, files=["rows/0001.copy.gz", "rows/0002.copy.gz"]),
        BinaryTable('"public"."system_user"', ['"id"'], files=["rows/0003.copy.gz"])])
    planner = Planner(no_owner=True)

    jobs = planner.binary_jobs(rows, schema)

    assert [next(iter(j.locks)) for j in jobs] == [b"public.items", b"public.items", b'public."system_user"']
    assert [j.statement for j in jobs][2] == b'COPY "public"."system_user" ("id") FROM STDIN (FORMAT binary)'
    assert set(planner.table_rows) == {b"public.items", b'public."system_user"'} and planner.chunks == 3
    key = Script(b"--\n-- Name: items items_pkey; Type: CONSTRAINT; Schema: public; Owner: o\n--\n\n"
                 b"ALTER TABLE ONLY public.items\n    ADD CONSTRAINT items_pkey PRIMARY KEY (id);\n\n", pre_data=False)
    assert [j.label for j in planner.script_jobs(key)][0].endswith("(its index)")  # split: the table got rows
