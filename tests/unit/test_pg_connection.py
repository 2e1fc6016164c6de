import pytest
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import (
    MASK,
    explain_connect_error,
    libpq_env,
    libpq_url,
    mask_url,
    parse_url,
    redact,
    secrets_of,
    sqlalchemy_url,
    with_database,
)

URL = "postgresql://app:p%40ss:word@db.prod:6432/release_manager?sslmode=require"


def test_parse_url_reads_every_part_and_decodes_the_password():
    info = parse_url(URL)
    assert (info.user, info.password, info.host, info.port, info.dbname) == (
        "app", "p@ss:word", "db.prod", 6432, "release_manager")
    assert info.params == {"sslmode": "require"}


def test_parse_url_accepts_socket_urls_and_sqlalchemy_schemes():
    info = parse_url("postgresql+psycopg2://postgres:@/release_manager?host=/tmp/sock")
    assert info.dbname == "release_manager" and info.params["host"] == "/tmp/sock"
    assert libpq_url("postgresql+psycopg2://u@h/d") == "postgresql://u@h/d"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"


@pytest.mark.parametrize("bad, words", [
    ("", "empty"), ("mysql://u@h/d", "not PostgreSQL"), ("postgresql://u@h", "names no database"),
])
def test_parse_url_rejects_bad_urls_with_a_fix(bad, words):
    with pytest.raises(OperatorError) as err:
        parse_url(bad)
    assert words in err.value.message and err.value.hint


def test_mask_url_hides_the_password_and_keeps_the_rest():
    masked = mask_url(URL)
    assert "p%40ss" not in masked and "word" not in masked.split("@")[0]
    assert masked == f"postgresql://app:{MASK}@db.prod:6432/release_manager?sslmode=require"
    assert mask_url("postgresql://app@h/d") == "postgresql://app@h/d"


def test_libpq_env_carries_the_connection_so_argv_holds_no_secret():
    env = libpq_env(URL, base={"PGPASSWORD": "old", "PATH": "/bin"})
    assert env["PGPASSWORD"] == "p@ss:word" and env["PGHOST"] == "db.prod"
    assert env["PGPORT"] == "6432" and env["PGDATABASE"] == "release_manager"
    assert env["PGSSLMODE"] == "require" and env["PATH"] == "/bin"


def test_libpq_env_drops_an_inherited_password_when_the_url_has_none():
    env = libpq_env("postgresql://app@h/d", base={"PGPASSWORD": "inherited"})
    assert "PGPASSWORD" not in env


def test_with_database_switches_only_the_database():
    assert with_database(URL, "scratch") == "postgresql://app:p%40ss:word@db.prod:6432/scratch?sslmode=require"


def test_redact_removes_raw_and_encoded_password_in_nested_output():
    secrets = secrets_of(URL)
    out = redact({"msg": "auth failed for p@ss:word", "cmd": ["x", URL]}, secrets)
    assert "p@ss:word" not in str(out) and "p%40ss" not in str(out)
    assert redact("postgresql://u:other@h/d", []) == f"postgresql://u:{MASK}@h/d"


def test_explain_connect_error_names_the_cause_and_hides_the_password():
    err = explain_connect_error('FATAL: password authentication failed for user "app" p@ss:word', URL)
    assert "p@ss:word" not in str(err) and "Check the password" in err.hint
    refused = explain_connect_error("Connection refused", URL)
    assert "port-forward" in refused.hint and "db.prod:6432" in refused.message


def test_a_password_given_as_a_url_parameter_is_masked_and_reaches_pg_tools_by_environment():
    url = "postgresql://app@db:5432/rm?sslmode=require&password=Qu3ry-S3cret"
    assert "Qu3ry-S3cret" not in mask_url(url) and mask_url(url).endswith("password=********")
    assert secrets_of(url) == ["Qu3ry-S3cret"]
    assert libpq_env(url, base={})["PGPASSWORD"] == "Qu3ry-S3cret"
    assert "Qu3ry-S3cret" not in redact(f"could not connect with {url}", [])


@pytest.mark.db
def test_a_malformed_url_is_explained_without_its_password(pg_server):
    from ansible.module_utils.operator_error import OperatorError
    from ansible.module_utils.pg_connection import connect

    bad = pg_server.admin_url.replace("postgresql://postgres", "postgresql://postgres:ab%zzMalformedSecret", 1)
    with pytest.raises(OperatorError) as caught:
        connect(bad)
    assert "MalformedSecret" not in str(caught.value)
