import pytest
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import (
    MASK,
    ConnInfo,
    explain_connect_error,
    mask_url,
    path_component,
    redact,
    scratch_name,
    secrets_of,
)

URL = "postgresql://app:p%40ss:word@db.prod:6432/release_manager?sslmode=require"


def test_parse_reads_every_part_and_decodes_the_password():
    info = ConnInfo.parse(URL)
    assert (info.user, info.password, info.host, info.port, info.dbname) == (
        "app", "p@ss:word", "db.prod", 6432, "release_manager")
    assert info.params == {"sslmode": "require"}
    assert "p@ss" not in repr(info) and "p@ss" not in str(info)


def test_parse_accepts_socket_urls_and_sqlalchemy_schemes():
    info = ConnInfo.parse("postgresql+psycopg2://postgres:@/release_manager?host=/tmp/sock")
    assert info.dbname == "release_manager" and info.params["host"] == "/tmp/sock"
    assert ConnInfo.parse("postgresql+psycopg2://u@h/d").libpq_url == "postgresql://u@h/d"
    assert ConnInfo.parse("postgres://u@h/d").sqlalchemy_url() == "postgresql+psycopg2://u@h/d"


def test_an_async_driver_is_kept_for_the_apps_env_and_dropped_for_our_own_connections():
    info = ConnInfo.parse("postgresql+asyncpg://app:pw@db:5432/rm")
    assert info.sqlalchemy_url() == "postgresql+asyncpg://app:pw@db:5432/rm"
    assert info.sync_sqlalchemy_url() == "postgresql+psycopg2://app:pw@db:5432/rm"
    assert info.libpq_url == "postgresql://app:pw@db:5432/rm"


@pytest.mark.parametrize("bad, words", [
    ("", "empty"), ("mysql://u@h/d", "not PostgreSQL"), ("postgresql://u@h", "names no database"),
    ("postgresql://u@h:54x2/d", "port"), ("postgresql://u@h/d?sslmode", "without '='"),
    ("postgresql://h1,h2/d", "several hosts"),
])
def test_parse_rejects_bad_urls_with_a_fix(bad, words):
    with pytest.raises(OperatorError) as err:
        ConnInfo.parse(bad)
    assert words in err.value.message and err.value.hint


@pytest.mark.parametrize("url", [
    "postgresql://u:Ca@nary-7f3e@127.0.0.1:5432/db",
    "postgresql://u:Sp@c:i/al%P?w#7f3e@127.0.0.1:5432/db",
    "postgresql://u:Sp@c:i/al%P?w7f3e@127.0.0.1:5432/db",
    "postgresql://u:ab/c7f3e@127.0.0.1:5432/db",
    "postgresql://u:ab?c7f3e@127.0.0.1:5432/db",
    "postgresql://u:ab%zz7f3e@127.0.0.1:5432/db",
    "postgresql://u:ab#c7f3e@127.0.0.1:5432/db",
])
def test_a_password_with_unencoded_specials_is_refused_without_echoing_any_of_it(url):
    with pytest.raises(OperatorError) as err:
        ConnInfo.parse(url)
    text = str(err.value)
    for piece in ("7f3e", "nary", "al%P", "Sp@", "ab/c", "ab?c", "ab%zz"):
        assert piece not in text, (piece, text)
    assert "%40" in err.value.hint and "%2F" in err.value.hint
    assert "7f3e" not in mask_url(url)
    assert all("7f3e" not in redact(f"error near {url}", secrets_of(url)) for _ in [0])


def test_an_encoded_password_with_every_special_round_trips():
    from urllib.parse import quote

    password = "Sp@c:i/al%P?w#7f3e"
    info = ConnInfo.parse(f"postgresql://u:{quote(password, safe='')}@127.0.0.1:5432/db")
    assert info.password == password
    assert ConnInfo.parse(info.libpq_url).password == password
    assert password not in info.masked and quote(password, safe="") not in info.masked


def test_masked_hides_the_password_and_keeps_the_rest():
    masked = ConnInfo.parse(URL).masked
    assert "p%40ss" not in masked and "word" not in masked.split("@")[0]
    assert masked == f"postgresql://app:{MASK}@db.prod:6432/release_manager?sslmode=require"
    assert mask_url("postgresql://app@h/d") == "postgresql://app@h/d"


def test_libpq_env_carries_the_connection_so_argv_holds_no_secret():
    env = ConnInfo.parse(URL).libpq_env(base={"PGPASSWORD": "old", "PATH": "/bin"})
    assert env["PGPASSWORD"] == "p@ss:word" and env["PGHOST"] == "db.prod"
    assert env["PGPORT"] == "6432" and env["PGDATABASE"] == "release_manager"
    assert env["PGSSLMODE"] == "require" and env["PATH"] == "/bin"


def test_libpq_env_keeps_what_the_url_leaves_out_as_psycopg2_does():
    """A password only in PGPASSWORD (or a user only in PGUSER) reaches pg_dump as it reaches psycopg2."""
    env = ConnInfo.parse("postgresql://h/d").libpq_env(base={"PGPASSWORD": "from-env", "PGUSER": "envuser"})
    assert env["PGPASSWORD"] == "from-env" and env["PGUSER"] == "envuser"
    assert env["PGDATABASE"] == "d" and env["PGHOST"] == "h"


def test_a_password_only_in_the_environment_is_a_secret_too(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "Env-S3cret-9")
    assert "Env-S3cret-9" in ConnInfo.parse("postgresql://app@h/d").secrets
    assert "Env-S3cret-9" in secrets_of("postgresql://app@h/d")


def test_with_database_switches_only_the_database():
    switched = ConnInfo.parse(URL).with_database("scratch")
    assert switched.libpq_url == "postgresql://app:p%40ss%3Aword@db.prod:6432/scratch?sslmode=require"
    assert switched.password == "p@ss:word"


def test_redact_removes_raw_and_encoded_password_in_nested_output():
    secrets = ConnInfo.parse(URL).secrets
    out = redact({"msg": "auth failed for p@ss:word", "cmd": ["x", URL]}, secrets)
    assert "p@ss:word" not in str(out) and "p%40ss" not in str(out)
    assert redact("postgresql://u:other@h/d", []) == f"postgresql://u:{MASK}@h/d"


def test_explain_connect_error_names_the_cause_and_hides_the_password():
    info = ConnInfo.parse(URL)
    err = explain_connect_error('FATAL: password authentication failed for user "app" p@ss:word', info)
    assert "p@ss:word" not in str(err) and "Check the password" in err.hint
    refused = explain_connect_error("Connection refused", info)
    assert "port-forward" in refused.hint and "db.prod:6432" in refused.message


def test_a_password_given_as_a_url_parameter_is_masked_and_reaches_pg_tools_by_environment():
    url = "postgresql://app@db:5432/rm?sslmode=require&password=Qu3ry-S3cret"
    info = ConnInfo.parse(url)
    assert "Qu3ry-S3cret" not in info.masked and info.masked.endswith("password=********")
    assert "Qu3ry-S3cret" in info.secrets
    assert info.libpq_env(base={})["PGPASSWORD"] == "Qu3ry-S3cret"
    assert "Qu3ry-S3cret" not in redact(f"could not connect with {url}", [])


@pytest.mark.parametrize("name, expected", [
    ("release_manager", "release_manager"), ("../../../tmp/x", "%2E.%2F..%2F..%2Ftmp%2Fx"), ("..", "%2E."),
    (".hidden", "%2Ehidden"), ("a b/c", "a%20b%2Fc"), ("", "%00"),
])
def test_path_component_keeps_every_name_inside_its_parent(name, expected, tmp_path):
    component = path_component(name)
    assert component == expected
    assert (tmp_path / component).resolve().parent == tmp_path.resolve()


def test_scratch_names_fit_in_63_bytes_and_never_equal_the_source():
    long = "x" * 63
    name = scratch_name(long, "drill", "0123456789")
    assert len(name.encode()) <= 63 and name != long and name.endswith("_drill_01234567")
    assert scratch_name("rm", "verify", "abcdef0123") == "rm_verify_abcdef01"
    assert len(scratch_name("é" * 40, "drill", "abcdefgh").encode()) <= 63


@pytest.mark.db
def test_a_malformed_url_is_explained_without_its_password(pg_server):
    bad = pg_server.admin_url.replace("postgresql://postgres", "postgresql://postgres:ab%zzMalformedSecret", 1)
    with pytest.raises(OperatorError) as caught:
        ConnInfo.parse(bad).connect()
    assert "MalformedSecret" not in str(caught.value)


def test_every_libpq_parameter_reaches_the_client_tools_or_the_url_is_refused():
    env = ConnInfo.parse("postgresql:///d?service=prod&channel_binding=require&sslcrl=/c").libpq_env(base={})
    assert (env["PGSERVICE"], env["PGCHANNELBINDING"], env["PGSSLCRL"]) == ("prod", "require", "/c")
    with pytest.raises(OperatorError, match="does not know"):
        ConnInfo.parse("postgresql://h/d?sslmod=require")
    with pytest.raises(OperatorError, match="sslpassword") as err:
        ConnInfo.parse("postgresql://h/d?sslpassword=SECRETXq1")
    assert "SECRETXq1" not in str(err.value)


def test_where_is_where_libpq_connects_query_parameters_winning():
    assert ConnInfo.parse("postgresql://u@127.0.0.1:5432/d?port=5433").where == "127.0.0.1:5433"
    assert ConnInfo.parse("postgresql://u@/d?host=127.0.0.1&port=5433").where == "127.0.0.1:5433"
    assert ConnInfo.parse("postgresql:///d?service=prod").where == "service prod"
