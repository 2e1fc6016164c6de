"""PostgreSQL connection URLs: parsing, masking, libpq environment and connecting.

Secrets never go on a command line: client tools get the password through ``PGPASSWORD`` in
their environment, and every text we return passes through :func:`redact` first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ansible.module_utils.operator_error import OperatorError

MASK = "********"
APPLICATION_NAME = "release-migrations"
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")

# libpq URL query parameters that have an environment-variable twin.
_PARAM_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "password": "PGPASSWORD",
}


@dataclass(frozen=True)
class ConnInfo:
    """A parsed ``postgresql://`` URL."""

    user: str | None
    password: str | None
    host: str | None
    port: int | None
    dbname: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """Where the server is, for messages: ``host:port`` or the socket directory."""
        host = self.params.get("host") or self.host or "local socket"
        return f"{host}:{self.port}" if self.port else host


def parse_url(url: str) -> ConnInfo:
    """Parse a PostgreSQL URL (``postgresql://``, ``postgres://`` or a SQLAlchemy ``+psycopg2``)."""
    if not url or "://" not in url:
        raise OperatorError(
            "The database URL is empty or not a URL.",
            "Pass a URL such as postgresql://USER:PASSWORD@HOST:5432/DBNAME.",
        )
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise OperatorError(
            f"The database URL has scheme '{parts.scheme}', which is not PostgreSQL.",
            "Use a postgresql:// URL.",
        )
    dbname = unquote(parts.path.lstrip("/"))
    params: dict[str, str] = {}
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        params[unquote(key)] = unquote(value)
    if not dbname:
        dbname = params.pop("dbname", "")
    if not dbname:
        raise OperatorError(
            f"The database URL {mask_url(url)} names no database.",
            "Append the database name to the URL, as in postgresql://HOST/release_manager.",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise OperatorError(f"The database URL has a bad port: {exc}.", "Use a number, e.g. :5432.") from None
    return ConnInfo(
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        dbname=dbname,
        params=params,
    )


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    query = re.sub(r"(^|&)password=[^&]*", rf"\1password={MASK}", parts.query)
    parts = parts._replace(query=query)
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{MASK}@{netloc[1]}"))


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("dbname="))
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe=""), query=query))


def libpq_url(url: str) -> str:
    """The URL as libpq and psycopg2 read it (no SQLAlchemy driver suffix)."""
    parse_url(url)
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme != "postgresql" else url


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy reads it, with the psycopg2 driver."""
    return "postgresql+psycopg2://" + libpq_url(url).split("://", 1)[1]


def libpq_env(url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore/psql: the whole connection, password included.

    The command line then names nothing secret (``ps`` shows command lines to every user).
    """
    info = parse_url(url)
    env = dict(os.environ if base is None else base)
    for var in ("PGSERVICE", "PGDATABASE", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD"):
        env.pop(var, None)
    if info.host:
        env["PGHOST"] = info.host
    if info.port:
        env["PGPORT"] = str(info.port)
    if info.user:
        env["PGUSER"] = info.user
    if info.password:
        env["PGPASSWORD"] = info.password
    env["PGDATABASE"] = info.dbname
    env.setdefault("PGAPPNAME", APPLICATION_NAME)
    for key, value in info.params.items():
        if key in _PARAM_ENV:
            env[_PARAM_ENV[key]] = value
    return env


def secrets_of(url: str | None) -> list[str]:
    """The strings that must never appear in output for this URL."""
    if not url:
        return []
    try:
        info = parse_url(url)
    except OperatorError:
        return []
    password = info.password or info.params.get("password")
    if not password:
        return []
    return sorted({password, quote(password, safe=""), quote(password)}, key=len, reverse=True)


def redact(text: Any, secrets: list[str]) -> Any:
    """Replace every secret (and any URL password) in text, lists and dicts."""
    if isinstance(text, dict):
        return {k: redact(v, secrets) for k, v in text.items()}
    if isinstance(text, (list, tuple)):
        return type(text)(redact(v, secrets) for v in text)
    if not isinstance(text, str):
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = re.sub(r"([?&]password=)[^&\s'\"]*", rf"\1{MASK}", text)
    return re.sub(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)[^@\s]*@", rf"\1{MASK}@", text)


def explain_connect_error(error_text: str, url: str) -> OperatorError:
    """Turn a libpq connection error into an operator-facing error (password removed)."""
    info = parse_url(url)
    text = redact(str(error_text).strip(), secrets_of(url))
    if "password authentication failed" in text or "no password supplied" in text:
        hint = (
            f"Check the password for user '{info.user}' (the vault variable or DATABASE_URL); "
            "it was not accepted by the server."
        )
    elif "does not exist" in text and "database" in text:
        hint = f"Create database '{info.dbname}' first, or fix the database name in the URL."
    elif "Connection refused" in text or "No such file or directory" in text or "timeout" in text:
        hint = (
            f"Check that PostgreSQL runs at {info.where} and accepts connections "
            "(from a laptop: kubectl port-forward to the database service first)."
        )
    elif "could not translate host name" in text:
        hint = f"The host '{info.host}' does not resolve; fix the host in the URL."
    else:
        hint = "Check the database URL and that the server is reachable from this host."
    return OperatorError(
        f"Cannot connect to database '{info.dbname}' at {info.where} as '{info.user}': {text}", hint
    )


def connect(url: str, *, autocommit: bool = True, connect_timeout: int = 10):
    """A psycopg2 connection; connection failures become :class:`OperatorError`."""
    import psycopg2  # imported here so URL helpers work without the driver

    try:
        conn = psycopg2.connect(
            libpq_url(url), connect_timeout=connect_timeout, application_name=APPLICATION_NAME
        )
    except psycopg2.Error as exc:  # also a malformed URL (ProgrammingError quotes the raw value)
        raise explain_connect_error(str(exc), url) from None
    conn.autocommit = autocommit
    return conn


def server_version(conn) -> tuple[int, str]:
    """(major version, full version string) of the connected server, e.g. (16, '16.2')."""
    num = conn.server_version  # e.g. 160002, 150020
    major = num // 10000
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        full = cur.fetchone()[0].split()[0]
    return major, full
