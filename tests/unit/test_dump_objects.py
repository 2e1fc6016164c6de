"""Some tables out of a plain dump, pointed at a side schema: the entries kept, their statements rewritten."""

from __future__ import annotations

import io

import pytest
from ansible.module_utils.dump_objects import Entry, Refused, SideSchema, entries, parsed, split_name, table_name

DUMP = b"""--
-- PostgreSQL database dump
--
\\restrict abc123
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: users; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.users (id integer NOT NULL, name text);

ALTER TABLE public.users OWNER TO app;

--
-- Name: users_id_seq; Type: SEQUENCE; Schema: public; Owner: app
--

CREATE SEQUENCE public.users_id_seq AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;

--
-- Name: users_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: app
--

ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;

--
-- Name: user_roles; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.user_roles (id integer NOT NULL, user_id integer);

--
-- Name: users id; Type: DEFAULT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('public.users_id_seq'::regclass);

--
-- Data for Name: user_roles; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.user_roles (id, user_id) FROM stdin;
1\t1
\\.

--
-- Data for Name: users; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.users (id, name) FROM stdin;
1\tada
2\tgrace
\\.

--
-- Name: users_id_seq; Type: SEQUENCE SET; Schema: public; Owner: app
--

SELECT pg_catalog.setval('public.users_id_seq', 2, true);

--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.users ADD CONSTRAINT users_pkey PRIMARY KEY (id);

--
-- Name: user_roles user_roles_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.user_roles
    ADD CONSTRAINT user_roles_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);

--
-- Name: COLUMN users.name; Type: COMMENT; Schema: public; Owner: app
--

COMMENT ON COLUMN public.users.name IS 'shown name';

\\unrestrict abc123
"""


def test_the_wanted_tables_objects_and_data_are_kept_and_moved_to_the_side_schema():
    side = SideSchema({("public", "users")}, "rm_side")
    kept, data, held = [], {}, {}

    def on_data(entry, rows):
        statements = parsed(entry.sql)
        if side.takes(entry, statements):
            data[entry.name] = (side.rewrite(statements[0]), list(rows))

    for entry in entries(io.BytesIO(DUMP), on_data):
        if entry.kind in ("PREAMBLE", "TABLE DATA"):
            continue
        statements = parsed(entry.sql)
        if entry.kind == "SEQUENCE" and not side.takes(entry, statements):
            held[entry.name] = statements
        elif side.takes(entry, statements):
            kept += [side.rewrite(s) for s in statements]
    assert kept[0] == "CREATE TABLE rm_side.users (id integer NOT NULL, name text)"
    assert "ALTER SEQUENCE rm_side.users_id_seq OWNED BY rm_side.users.id" in kept
    assert any("nextval(CAST('rm_side.users_id_seq' AS regclass))" in k for k in kept)
    assert "SELECT pg_catalog.setval('rm_side.users_id_seq', 2, TRUE)" in kept
    assert "ALTER TABLE ONLY rm_side.users ADD CONSTRAINT users_pkey PRIMARY KEY (id)" in kept
    assert "COMMENT ON COLUMN rm_side.users.name IS 'shown name'" in kept
    assert not any("user_roles" in k for k in kept)  # another table's foreign key to users is that table's
    assert data == {"users": ("COPY rm_side.users (id, name) FROM STDIN", [b"1\tada\n", b"2\tgrace\n"])}
    assert "users_id_seq" in held and ("public", "users_id_seq") in side.sequences


def test_psql_meta_commands_and_unread_data_are_skipped():
    kinds = [e.kind for e in entries(io.BytesIO(DUMP), lambda entry, rows: None)]
    assert kinds[0] == "PREAMBLE" and kinds.count("TABLE DATA") == 2
    preamble = next(entries(io.BytesIO(DUMP), lambda entry, rows: None)).sql
    assert "restrict" not in preamble and "SET statement_timeout = 0;" in preamble


def test_names_are_read_as_postgresql_reads_them():
    assert split_name('"Tenant A"."Odd""Name"') == ["Tenant A", 'Odd"Name']
    assert split_name('public."Odd""Name"') == ["public", 'Odd"Name']
    assert split_name('"a.b".c') == ["a.b", "c"] and split_name("Tenant_B.Items") == ["tenant_b", "items"]
    for bad in ("a.", '"unterminated', "two words", ""):
        with pytest.raises(ValueError):
            split_name(bad)
    assert table_name("Tenant A", 'Odd"Name') == '"Tenant A"."Odd""Name"' and table_name("public", "users") == "users"


def test_quoted_names_and_their_sequences_are_pointed_at_the_side_schema():
    side = SideSchema({("Tenant A", 'Odd"Name')}, "rm_side")
    owned = parsed('ALTER SEQUENCE "Tenant A"."Odd""Name_id_seq" OWNED BY "Tenant A"."Odd""Name".id;')
    assert side.takes(Entry('Odd"Name_id_seq', "SEQUENCE OWNED BY", "Tenant A"), owned)
    default = parsed("""ALTER TABLE ONLY "Tenant A"."Odd""Name" ALTER COLUMN id SET DEFAULT """
                     """nextval('"Tenant A"."Odd""Name_id_seq"'::regclass);""")
    assert "nextval(CAST('rm_side.\"Odd\"\"Name_id_seq\"' AS regclass))" in side.rewrite(default[0])
    setval = parsed("""SELECT pg_catalog.setval('"Tenant A"."Odd""Name_id_seq"', 3, true);""")
    assert side.takes(Entry('Odd"Name_id_seq', "SEQUENCE SET", "Tenant A"), setval)
    assert side.rewrite(setval[0]) == """SELECT pg_catalog.setval('rm_side."Odd""Name_id_seq"', 3, TRUE)"""


def test_an_identity_columns_sequence_is_created_in_the_side_schema():
    side = SideSchema({("public", "t_ident")}, "rm_side")
    identity = parsed("ALTER TABLE public.t_ident ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY "
                      "(SEQUENCE NAME public.t_ident_id_seq START WITH 1);")
    assert side.takes(Entry("t_ident_id_seq", "SEQUENCE", "public"), identity)
    assert "SEQUENCE NAME rm_side.t_ident_id_seq" in side.rewrite(identity[0])
    setval = parsed("SELECT pg_catalog.setval('public.t_ident_id_seq', 7, true);")
    assert side.takes(Entry("t_ident_id_seq", "SEQUENCE SET", "public"), setval)
    assert side.rewrite(setval[0]) == "SELECT pg_catalog.setval('rm_side.t_ident_id_seq', 7, TRUE)"


@pytest.mark.parametrize("statement", [
    "SELECT pg_catalog.setval('public.users_id_seq', 5, true)",  # a live sequence's value
    "ALTER TABLE public.users ADD COLUMN x int",  # a live table
    "CREATE TABLE rm_side.x (id int) INHERITS (public.users)",
    "CREATE INDEX i ON public.users (id)",
    "COMMENT ON TABLE public.users IS 'x'",
    "SELECT count(*) FROM public.users",
    "DROP TABLE public.users",
    "ALTER TABLE rm_side.t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME public.t_id_seq)",
])
def test_a_statement_that_would_act_outside_the_side_schema_is_refused_before_it_runs(statement):
    side = SideSchema({("public", "t")}, "rm_side")
    with pytest.raises(Refused, match="outside the side schema rm_side"):
        side.rewrite(parsed(statement + ";")[0])


def test_a_foreign_key_to_a_live_table_and_the_preambles_settings_are_allowed():
    side = SideSchema({("public", "child")}, "rm_side")
    fk = parsed("ALTER TABLE ONLY public.child ADD CONSTRAINT c_fk FOREIGN KEY (p) REFERENCES public.parent(id);")
    assert side.rewrite(fk[0]).startswith("ALTER TABLE ONLY rm_side.child ADD CONSTRAINT c_fk")
    assert side.session(parsed("SELECT pg_catalog.set_config('search_path', '', false);")[0])
    with pytest.raises(Refused):
        side.session(parsed("SELECT pg_catalog.setval('public.x', 1);")[0])
