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
