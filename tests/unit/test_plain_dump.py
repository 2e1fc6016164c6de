"""The plain-dump ownership filter: what it drops, what it keeps, wherever the chunk boundaries fall."""

from __future__ import annotations

import io

from ansible.module_utils.plain_dump import OWNER_PRIV_RE, filtered_chunks


def strip_owner_statements(lines, enabled: bool = True):
    """The reference: the same filter, one line at a time (what filtered_chunks must equal)."""
    in_copy = False
    for line in lines:
        if in_copy:
            if line.rstrip(b"\r\n") == b"\\.":
                in_copy = False
            yield line
            continue
        if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
            yield line
            continue
        if enabled and OWNER_PRIV_RE.match(line):
            continue
        yield line


def filtered(lines: list[bytes], enabled: bool = True) -> list[bytes]:
    return io.BytesIO(b"".join(filtered_chunks(io.BytesIO(b"".join(lines)), enabled))).readlines()


def test_plain_owner_and_privilege_statements_are_skipped_outside_copy_data():
    dump = [
        b"CREATE TABLE public.t (x text);\n",
        b"ALTER TABLE public.t OWNER TO app_owner;\n",
        b"COPY public.t (x) FROM stdin;\n",
        b"GRANT ALL ON t TO x;\n",
        b"ALTER TABLE public.t OWNER TO data_not_sql;\n",
        b"\\.\n",
        b"GRANT SELECT ON TABLE public.t TO reporting;\n",
        b"REVOKE ALL ON SCHEMA public FROM PUBLIC;\n",
        b"ALTER DEFAULT PRIVILEGES FOR ROLE app GRANT SELECT ON TABLES TO reporting;\n",
        b"ALTER SEQUENCE public.s OWNED BY public.t.id;\n",
    ]
    kept = filtered(dump)
    assert kept == [dump[0], dump[2], dump[3], dump[4], dump[5], dump[9]]
    assert filtered(dump, enabled=False) == dump



def test_chunked_filter_equals_the_line_filter_whatever_the_chunk_boundaries():
    dump = (
        b"SET x = 1;\nALTER TABLE public.t OWNER TO app_owner;\nCOPY public.t (x) FROM stdin;\n"
        + b"".join(b"row %d GRANT ALL ON t TO x;\n" % i for i in range(200))
        + b"\\.\nGRANT SELECT ON TABLE public.t TO reporting;\nCOPY public.e (x) FROM stdin;\n\\.\n"
        + b"CREATE INDEX i ON public.t (x);\nALTER TABLE public.t OWNER TO z;"
    )
    expected = b"".join(strip_owner_statements(io.BytesIO(dump).readlines()))
    for size in (1, 2, 3, 7, 64, 1000, 1 << 20):
        assert b"".join(filtered_chunks(io.BytesIO(dump), True, chunk_size=size)) == expected, size
    assert b"".join(filtered_chunks(io.BytesIO(dump), False, chunk_size=5)) == dump


# --- cutting a dump into work for several sessions ---------------------------------------------------

import pytest  # noqa: E402
from ansible.module_utils.operator_error import OperatorError  # noqa: E402
from ansible.module_utils.plain_dump import (  # noqa: E402
    CopyChunk,
    NotSplittable,
    Script,
    dump_entries,
    lock_plan,
    split_plain,
)


def data_header(name: bytes, schema: bytes = b"public") -> bytes:
    return b"--\n-- Data for Name: %s; Type: TABLE DATA; Schema: %s; Owner: postgres\n--\n\n" % (name, schema)


ROWS = b"".join(b"%d\trow %d with \\\\. and a tab\\t and \\n escaped\n" % (i, i) for i in range(3000))
DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
    b"SELECT pg_catalog.set_config('search_path', '', false);\n\n"
    b"CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\n"
    b"COPY public.t (id) FROM stdin;\n$$;\n\n"  # a COPY line in a function body: no header, not data
    b'CREATE TABLE "Odd ""S"""."a b" (id int, v text);\nCREATE TABLE public.empty (id int);\n\n'
    + data_header(b'a b', b'Odd "S"') + b'COPY "Odd ""S"""."a b" (id, v) FROM stdin;\n' + ROWS + b"\\.\n\n\n"
    + data_header(b"empty") + b"COPY public.empty (id) FROM stdin;\n\\.\n\n\n"
    + b"SELECT pg_catalog.setval('public.s', 42, true);\n\n\n"
    + b"--\n-- Name: a b pk; Type: CONSTRAINT; Schema: Odd \"S\"; Owner: postgres\n--\n\n"
    + b'ALTER TABLE ONLY "Odd ""S"""."a b"\n    ADD CONSTRAINT pk PRIMARY KEY (id);\n\n\n'
    + b"--\n-- PostgreSQL database dump complete\n--\n\n"
)


def rebuilt(dump: bytes, chunk_size: int, read_size: int) -> tuple[bytes, list]:
    """The dump put back together from what split_plain yields (empty COPY blocks dropped)."""
    out, items, open_copy = [], [], None
    for item in split_plain(io.BytesIO(dump), chunk_size=chunk_size, read_size=read_size):
        items.append(item)
        if isinstance(item, CopyChunk):
            if open_copy != item.statement:
                out.append((b"\\.\n" if open_copy else b"") + item.statement + b";\n")
                open_copy = item.statement
            out.append(item.data)
        else:
            out.append((b"\\.\n" if open_copy else b"") + item.text)
            open_copy = None
    return b"".join(out), items


@pytest.mark.parametrize(("chunk_size", "read_size"),
                         [(1 << 20, 1 << 16), (4096, 1000), (50, 1), *((100, n) for n in range(2, 12))])
def test_the_pieces_put_together_are_the_dump_whatever_the_read_and_chunk_sizes(chunk_size, read_size):
    text, items = rebuilt(DUMP, chunk_size, read_size)
    assert text == DUMP.replace(data_header(b"empty") + b"COPY public.empty (id) FROM stdin;\n\\.\n",
                                data_header(b"empty"))
    chunks = [i for i in items if isinstance(i, CopyChunk)]
    assert isinstance(items[0], Script) and items[0].pre_data and b"CREATE FUNCTION" in items[0].text
    assert {c.table for c in chunks} == {b'"Odd ""S"""."a b"'}
    assert all(c.data.endswith(b"\n") and c.size <= max(chunk_size, 4096) + read_size + 100 for c in chunks)
    assert b"".join(c.data for c in chunks) == ROWS
    assert len(chunks) > 1 or chunk_size > len(ROWS)


def test_a_dump_without_copy_data_is_not_split_and_a_truncated_one_fails():
    with pytest.raises(NotSplittable):
        list(split_plain(io.BytesIO(b"SET x = 1;\nINSERT INTO t VALUES (1);\n")))
    truncated = DUMP[:DUMP.index(b"\\.\n")]
    with pytest.raises(OperatorError, match="ends inside a table's COPY data"):
        list(split_plain(io.BytesIO(truncated), chunk_size=1000, read_size=100))


def test_the_entries_after_the_data_and_which_may_run_beside_others():
    text = (
        b"\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: o\n--\n\n"
        b"ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n"
        b"SET default_tablespace = fast;\n\n"
        b"--\n-- Name: t_v; Type: INDEX; Schema: public; Owner: o\n--\n\n"
        b"CREATE INDEX t_v ON public.t USING btree (v) WHERE (v <> 'x');\n\n\n"
        b"--\n-- Name: INDEX t_v; Type: COMMENT; Schema: public; Owner: o\n--\n\n"
        b"COMMENT ON INDEX public.t_v IS 'v';\n\n\n"
        b"--\n-- Name: u u_t; Type: FK CONSTRAINT; Schema: public; Owner: o\n--\n\n"
        b'ALTER TABLE ONLY public.u\n    ADD CONSTRAINT u_t FOREIGN KEY (t_id) REFERENCES "S".t(id);\n\n\n'
        b"--\n-- Name: s; Type: SEQUENCE SET; Schema: public; Owner: o\n--\n\n"
        b"SELECT pg_catalog.setval('public.s', 3, true);\n\n\n"
        b"--\n-- Name: t trg; Type: TRIGGER; Schema: public; Owner: o\n--\n\n"
        b"CREATE TRIGGER trg AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n"
        b"CREATE TABLE public.appended (x int);\n"
    )
    entries = dump_entries(text)
    assert [e.kind for e in entries] == [None, "CONSTRAINT", "INDEX", "COMMENT", "FK CONSTRAINT", "SEQUENCE SET",
                                         "TRIGGER"]
    assert entries[1].settings == (b"SET default_tablespace = fast;",) and b"SET " not in entries[1].text
    assert [lock_plan(e) for e in entries[1:]] == [
        {b"public.t": "exclusive"}, {b"public.t": "index"}, None,
        {b"public.u": "exclusive", b'"S".t': "exclusive"}, {}, None]
    again = b"".join(e.text + b"".join(s + b"\n" for s in e.settings) for e in entries)
    assert again.split() == text.split()  # the same text; only blank lines after the settings may go


def test_an_entry_with_more_than_its_one_statement_runs_alone():
    entry = dump_entries(b"--\n-- Name: t_v; Type: INDEX; Schema: public; Owner: o\n--\n\n"
                         b"CREATE INDEX t_v ON public.t USING btree (v);\nDROP TABLE public.t;\n")[0]
    assert lock_plan(entry) is None


def test_the_mask_hides_strings_names_bodies_and_block_comments_and_keeps_line_comments():
    from ansible.module_utils.plain_dump import Mask

    text = (b"SELECT 'it''s', E'a\\'b', \"Odd\"\"Name\", $f$GRANT x;\n$f$, $$y$$ /* c /* nested */ */ "
            b"-- 'not a string\nCOPY t FROM stdin;\n")
    masked = Mask().feed(text)
    assert len(masked) == len(text) and masked.count(b"\n") == text.count(b"\n")
    assert masked.startswith(b"SELECT 'xxxxx', E'xxxx', \"xxxxxxxxx\", $f$xxxxxxxx\n$f$, $$x$$ /*")
    assert b"-- 'not a string\nCOPY t FROM stdin;\n" in masked  # a line comment's quote opens nothing
    # Fed line by line, a region that spans lines is carried over.
    mask = Mask()
    lines = [mask.feed(line) for line in (b"SELECT $b$\n", b"GRANT ALL ON t TO x;\n", b"$b$;\n")]
    assert lines == [b"SELECT $b$\n", b"xxxxxxxxxxxxxxxxxxxx\n", b"$b$;\n"] and mask.top_level


def test_comments_after_the_data_run_last_in_one_script():
    from ansible.module_utils.parallel_load import Planner

    def entry(name: str, kind: str, sql: str) -> bytes:
        return f"--\n-- Name: {name}; Type: {kind}; Schema: public; Owner: o\n--\n\n{sql}\n\n\n".encode()

    post = b"".join(entry(f"t_{c}", "INDEX", f"CREATE INDEX t_{c} ON public.t USING btree ({c});")
                    + entry(f"INDEX t_{c}", "COMMENT", f"COMMENT ON INDEX public.t_{c} IS '{c}';") for c in "ab")
    planner = Planner(no_owner=True)
    jobs = planner.script_jobs(Script(post))
    assert [j.kind for j in jobs] == ["sql", "sql"]  # the two builds, side by side: no script between them
    (last,) = planner.last_jobs()
    assert last.kind == "script" and last.payload.count(b"COMMENT ON INDEX") == 2


def test_the_end_of_a_tables_data_is_found_as_a_plain_search_finds_it():
    """The end-of-data line is found without copying the block (backslashes by memchr, or the whole line where
    they are common): the same place as the plain search, on random data made of the bytes that matter."""
    import random

    from ansible.module_utils.plain_dump import _END_LINE, _end_marker

    rng = random.Random(11)  # noqa: S311 - test data, not secrets
    alphabet = [b"a", b"\n", b"\\", b".", b"x"]
    for _ in range(20000):
        before = b"".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3])))
        block = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        assert _end_marker(before, block) == (before + block).find(_END_LINE), (before, block)
    rows = b"1\tno backslash here\n" * 1000
    assert _end_marker(b"\n", rows + b"\\.\n\nSET x = 1;\n") == 1 + len(rows) - 1
    escaped = b"2\tline\\none\\ttab\\\\.\n" * 1000  # backslashes everywhere, and "\\." in a value
    assert _end_marker(b"\n", escaped + b"\\.\n") == len(escaped)
    assert _end_marker(b"ab\n", b"\\.\nrest") == 2 and _end_marker(b"\n", escaped) == -1
