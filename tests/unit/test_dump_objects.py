"""Some tables out of a plain dump, pointed at a side schema: the entries kept, their statements rewritten."""

from __future__ import annotations

import io

from ansible.module_utils.dump_objects import SideSchema, entries, parsed

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
    assert any("nextval(CAST('\"rm_side\".users_id_seq' AS regclass))" in k for k in kept)
    assert "SELECT pg_catalog.setval('\"rm_side\".users_id_seq', 2, TRUE)" in kept
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
