"""One PostgreSQL connection, parsed once: its URL forms, its secrets, its libpq environment.

A module parses its ``url`` option into a :class:`ConnInfo` at entry and hands that object down;
nothing below re-reads the URL text. The object knows how to show itself (password masked), which
strings must never be printed (its secrets), the environment a client tool needs (so no secret is on
a command line, where ``ps`` shows it to every user) and the URLs psycopg2 and SQLAlchemy read.

A URL that libpq and a reader could understand differently (an unencoded ``@``, ``/``, ``?`` or ``#``
in the password) is refused before anything connects, and no part of its user-info is echoed.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

from ansible.module_utils.operator_error import OperatorError

MASK = "********"
APPLICATION_NAME = "release-migrations"
# Schemes we accept; the part after '+' is a SQLAlchemy driver, kept for the app's own env.py.
_SCHEMES = ("postgresql", "postgres")
_DRIVERS = ("psycopg2", "psycopg", "psycopg2cffi", "asyncpg", "pg8000", "psycopg_async")
_ENCODE_HINT = (
    "Percent-encode the user name and password: @ as %40, : as %3A, / as %2F, ? as %3F, # as %23, "
    "% as %25 (Ansible: {{ password | urlencode | replace('/', '%2F') }}; "
    "Python: urllib.parse.quote(password, safe=''))."
)

# libpq URL query parameters, with the environment variable that carries each to the client tools
# (pg_dump, pg_restore, psql get the connection only through their environment).
_PARAM_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "client_encoding": "PGCLIENTENCODING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslcompression": "PGSSLCOMPRESSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "gsslib": "PGGSSLIB",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "keepalives": None, "keepalives_idle": None, "keepalives_interval": None, "keepalives_count": None,
    "tcp_user_timeout": None,
}
# Parameters that would reach psycopg2 but cannot reach the client tools without a command line.
_REFUSED_PARAMS = {
    "sslpassword": "it has no environment variable, so pg_dump could only get it on its command line, where `ps` "
                   "shows it; use a key without a passphrase (PGSSLKEY) or a service file",
}


def _bad_url(problem: str, hint: str = _ENCODE_HINT) -> OperatorError:
    return OperatorError(f"The database URL {problem}", hint)


def _check_percent_escapes(text: str, where: str) -> None:
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise _bad_url(f"has a '%' in its {where} that is not a percent-escape (%XX).")


@dataclass(frozen=True)
class ConnInfo:
    """A parsed ``postgresql://`` URL. ``repr`` and ``str`` never show the password."""

    user: str | None
    password: str | None = field(repr=False)
    host: str | None
    port: int | None
    dbname: str
    params: dict[str, str] = field(default_factory=dict, repr=False)
    driver: str | None = None  # the SQLAlchemy driver the URL named (postgresql+asyncpg://)

    # --- parsing -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, url: str) -> ConnInfo:
        """Parse a URL (``postgresql://``, ``postgres://``, ``postgresql+DRIVER://``) or refuse it."""
        if not isinstance(url, str) or "://" not in url:
            raise _bad_url("is empty or not a URL.", "Pass a URL such as postgresql://USER:PASSWORD@HOST:5432/DBNAME.")
        scheme, rest = url.split("://", 1)
        base, _, driver = scheme.lower().partition("+")
        if base not in _SCHEMES or (driver and driver not in _DRIVERS):
            raise _bad_url(f"has scheme '{scheme[:40]}', which is not PostgreSQL.",
                           "Use a postgresql:// URL (postgresql+asyncpg:// or +psycopg are accepted too).")
        if "#" in rest:
            raise _bad_url("contains '#' (a fragment, or an unencoded '#' in the password).")
        at = rest.find("@")
        userinfo = None
        if at >= 0:
            before = rest[:at]
            if "/" in before or "?" in before:
                raise _bad_url("has an '@' after the start of its path or query: an unencoded '/' or '?' in the "
                               "password, or an '@' in the database name or a parameter.")
            if "@" in rest[at + 1:]:
                raise _bad_url("contains more than one '@' (an unencoded '@' in the user name or password).")
            userinfo, rest = before, rest[at + 1:]
        hostport, sep, tail = _split_at_first(rest, "/?")
        path, _, query = (tail.partition("?") if sep == "/" else ("", "", tail)) if sep else ("", "", "")
        user = password = None
        if userinfo is not None:
            _check_percent_escapes(userinfo, "user name or password")
            user_text, colon, password_text = userinfo.partition(":")
            user = unquote(user_text) or None
            password = unquote(password_text) if colon else None
        host, port = _parse_hostport(hostport)
        _check_percent_escapes(path, "database name")
        params: dict[str, str] = {}
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if not eq:
                raise _bad_url("has a query parameter without '=' (write key=value pairs joined by &).")
            _check_percent_escapes(item, "parameters")
            params[unquote(key)] = unquote(value)
        dbname = unquote(path) or params.pop("dbname", "")
        params.pop("dbname", None)
        _check_params(params)
        if not dbname:
            masked = _masked_text(base, driver, user, password, host, port, "", params)
            raise OperatorError(
                f"The database URL {masked} names no database.",
                "Append the database name to the URL, as in postgresql://HOST/release_manager.",
            )
        if "\x00" in dbname:
            raise _bad_url("has a NUL byte in its database name.", "Fix the database name.")
        return cls(user=user, password=password, host=host, port=port, dbname=dbname, params=params,
                   driver=driver or None)

    # --- what it shows -------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """Where the server is, as libpq reaches it (query parameters win, as in libpq): ``host:port``, the
        socket directory, or the service."""
        host = self.params.get("host") or self.params.get("hostaddr") or self.host
        port = self.params.get("port") or self.port
        if not host and self.params.get("service"):
            return f"service {self.params['service']}"
        host = host or "local socket"
        return f"{host}:{port}" if port else host

    @property
    def masked(self) -> str:
        """The URL with every password masked: safe to print and to store in a report."""
        return _masked_text("postgresql", self.driver, self.user, self.password, self.host, self.port,
                            self.dbname, self.params)

    def __str__(self) -> str:
        return self.masked

    @property
    def secrets(self) -> list[str]:
        """Strings that must never appear in output: the password (URL or parameter) and its encodings,
        and a ``PGPASSWORD`` from the environment that stands in for a missing one."""
        found = {s for s in (self.password, os.environ.get("PGPASSWORD")) if s}
        found |= {v for k, v in self.params.items() if "password" in k and v}
        out: set[str] = set()
        for secret in found:
            out |= {secret, quote(secret, safe=""), quote(secret)}
        return sorted(out, key=len, reverse=True)

    # --- what it connects with -----------------------------------------------------------------

    def url(self, *, scheme: str = "postgresql") -> str:
        """The full URL (password included): only for drivers, never for output."""
        return _url_text(scheme, self.user, self.password, self.host, self.port, self.dbname, self.params)

    @property
    def libpq_url(self) -> str:
        """The URL as libpq and psycopg2 read it."""
        return self.url()

    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy: the driver the user named (an async app's env.py needs asyncpg), else psycopg2."""
        return self.url(scheme=f"postgresql+{self.driver or 'psycopg2'}")

    def sync_sqlalchemy_url(self) -> str:
        """The URL for our own synchronous SQLAlchemy engine (always psycopg2)."""
        return self.url(scheme="postgresql+psycopg2")

    def with_database(self, dbname: str) -> ConnInfo:
        """The same server and credentials, another database."""
        return replace(self, dbname=dbname)

    def libpq_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_dump/pg_restore/psql: the whole connection, password included.

        The tools then connect exactly as psycopg2 does with this URL: what the URL names wins, and
        what it leaves out comes from the same environment (PGPASSWORD, PGPASSFILE, PGUSER, ...).
        """
        env = dict(os.environ if base is None else base)
        env.pop("PGDATABASE", None)
        for key, value in (("PGHOST", self.host), ("PGPORT", self.port), ("PGUSER", self.user),
                           ("PGPASSWORD", self.password)):
            if value not in (None, ""):
                env[key] = str(value)
        env["PGDATABASE"] = self.dbname
        env.setdefault("PGAPPNAME", APPLICATION_NAME)
        for key, value in self.params.items():
            if _PARAM_ENV.get(key):
                env[_PARAM_ENV[key]] = value
        return env

    def connect(self, *, autocommit: bool = True, connect_timeout: int = 10):
        """A psycopg2 connection; connection failures become :class:`OperatorError` (password removed)."""
        import psycopg2  # imported here so URL helpers work without the driver

        try:
            conn = psycopg2.connect(self.libpq_url, connect_timeout=connect_timeout,
                                    application_name=APPLICATION_NAME)
        except psycopg2.Error as exc:
            raise explain_connect_error(str(exc), self) from None
        conn.autocommit = autocommit
        return conn


def _check_params(params: dict[str, str]) -> None:
    for key in params:
        if key in _REFUSED_PARAMS:
            raise _bad_url(f"sets '{key}', which this tool cannot pass safely: {_REFUSED_PARAMS[key]}.",
                           f"Remove {key} from the URL.")
        if key not in _PARAM_ENV:
            known = ", ".join(sorted(k for k in _PARAM_ENV if _PARAM_ENV[k]))
            raise _bad_url(f"has the parameter '{key[:40]}', which libpq does not know or this tool cannot pass to "
                           "the client tools.", f"Use libpq's parameters: {known}.")


def _split_at_first(text: str, chars: str) -> tuple[str, str, str]:
    positions = [i for i in (text.find(c) for c in chars) if i >= 0]
    if not positions:
        return text, "", ""
    i = min(positions)
    return text[:i], text[i], text[i + 1:]


def _parse_hostport(hostport: str) -> tuple[str | None, int | None]:
    if "," in hostport:
        raise _bad_url("lists several hosts; this tool connects to one server.",
                       "Name one host (the primary), e.g. postgresql://USER@db-primary:5432/DBNAME.")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad_url("has an IPv6 address without its closing ']'.", "Write it as [::1]:5432.")
        host, port_text = hostport[1:end], hostport[end + 1:].removeprefix(":")
    else:
        host, _, port_text = hostport.partition(":")
    _check_percent_escapes(host, "host")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise _bad_url("has a port that is not a number from 1 to 65535 (an unencoded ':' or '@' in the "
                       "password can cause this).")
    return (unquote(host) or None), (int(port_text) if port_text else None)


def _url_text(scheme: str, user: str | None, password: str | None, host: str | None, port: int | None,
              dbname: str, params: dict[str, str], password_text: str | None = None) -> str:
    userinfo = ""
    if user is not None or password is not None:
        userinfo = quote(user or "", safe="")
        if password is not None:
            userinfo += ":" + (password_text if password_text is not None else quote(password, safe=""))
        userinfo += "@"
    hostport = ""
    if host:
        hostport = f"[{host}]" if ":" in host else quote(host, safe="")
    if port:
        hostport += f":{port}"
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/:,*')}" for k, v in params.items())
    return f"{scheme}://{userinfo}{hostport}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def _masked_text(base: str, driver: str | None, user, password, host, port, dbname, params) -> str:
    shown = {k: (MASK if "password" in k else v) for k, v in params.items()}
    scheme = f"{base}+{driver}" if driver else base
    return _url_text(scheme, user, password, host, port, dbname, shown, password_text=MASK)


class ParsedOnce:
    """For a request dataclass with ``url`` and ``conn`` fields: ``conn`` is the module's parse of ``url``
    (handed over by the module shell), or parsed here when the request is made without it (tests, scripts)."""

    url: str
    conn: ConnInfo | None

    def __post_init__(self) -> None:
        if self.conn is None:
            self.conn = ConnInfo.parse(self.url)


# --- module-facing helpers -----------------------------------------------------------------------


def parse_url(url: str) -> ConnInfo:
    """:meth:`ConnInfo.parse` (kept as a function for callers that hold only a URL string)."""
    return ConnInfo.parse(url)


def mask_url(url: str) -> str:
    """The URL with its password masked; a URL that cannot be parsed shows nothing of itself."""
    try:
        return ConnInfo.parse(url).masked
    except OperatorError:
        return f"<a database URL that cannot be parsed: {MASK}>"


def secrets_of(*urls: str | None) -> list[str]:
    """The strings that must never appear in output for these URLs (unparseable ones: their user-info)."""
    out: set[str] = set(raw_secrets(*urls))
    for url in urls:
        if not url:
            continue
        with contextlib.suppress(OperatorError):
            out |= set(ConnInfo.parse(url).secrets)
    return sorted(out, key=len, reverse=True)


def raw_secrets(*urls: str | None) -> list[str]:
    """Without parsing: each URL's user-info (and its pieces) and PGPASSWORD, for messages about URLs that
    could not be parsed."""
    out: set[str] = set()
    for url in urls:
        if url:
            out |= set(_raw_userinfo_secrets(url))
    if os.environ.get("PGPASSWORD"):
        out.add(os.environ["PGPASSWORD"])
    return sorted(out, key=len, reverse=True)


def _raw_userinfo_secrets(url: str) -> list[str]:
    """For a URL we refused: everything between '://' and its last '@', and each piece of it."""
    rest = url.split("://", 1)[-1]
    if "@" not in rest:
        return []
    userinfo = rest.rsplit("@", 1)[0]
    if ":" not in userinfo and "@" not in userinfo:
        return []  # a user name alone holds no secret (masking it would mask every "postgres" in "postgresql")
    pieces = {userinfo, unquote(userinfo)}
    user, _, password = userinfo.partition(":")
    if password:
        pieces |= {password, unquote(password)}
        pieces |= {p for p in re.split(r"[@:/?#%]", password) if len(p) >= 4}
    return [p for p in pieces if p]


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
    return re.sub(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)[^\s]*@", rf"\1{MASK}@", text)


def explain_connect_error(error_text: str, conn: ConnInfo) -> OperatorError:
    """Turn a libpq connection error into an operator-facing error (password removed)."""
    text = redact(str(error_text).strip(), conn.secrets)
    if "password authentication failed" in text or "no password supplied" in text:
        hint = (
            f"Check the password for user '{conn.user}' (the vault variable, DATABASE_URL or PGPASSWORD); "
            "it was not accepted by the server."
        )
    elif "does not exist" in text and "database" in text:
        hint = f"Create database '{conn.dbname}' first, or fix the database name in the URL."
    elif "Connection refused" in text or "No such file or directory" in text or "timeout" in text:
        hint = (
            f"Check that PostgreSQL runs at {conn.where} and accepts connections "
            "(from a laptop: kubectl port-forward to the database service first)."
        )
    elif "could not translate host name" in text:
        hint = f"The host '{conn.host}' does not resolve; fix the host in the URL."
    else:
        hint = "Check the database URL and that the server is reachable from this host."
    return OperatorError(
        f"Cannot connect to database '{conn.dbname}' at {conn.where} as '{conn.user}': {text}", hint
    )


def server_version(conn) -> tuple[int, str]:
    """(major version, full version string) of the connected server, e.g. (16, '16.2')."""
    num = conn.server_version  # e.g. 160002, 150020
    major = num // 10000
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        full = cur.fetchone()[0].split()[0]
    return major, full


def path_component(name: str) -> str:
    """A database name as one safe path component: inside its parent directory whatever the name.

    Letters, digits, '_', '-' and '.' stay; anything else becomes %XX; a leading '.' too (no '.', '..'
    or hidden names).
    """
    text = "".join(c if (c.isascii() and (c.isalnum() or c in "_-.")) else quote(c, safe="") for c in name)
    if text.startswith("."):
        text = "%2E" + text[1:]
    return text or "%00"


NAMEDATALEN = 63


def scratch_name(database: str, purpose: str, seed: str) -> str:
    """A scratch database name for ``database`` that PostgreSQL keeps whole (at most 63 bytes).

    Truncating ``<name>_drill_<hash>`` to 63 bytes, as PostgreSQL would, could land on the source
    database itself; so the source part is shortened instead and the suffix always survives.
    """
    suffix = f"_{purpose}_{seed[:8]}"
    room = NAMEDATALEN - len(suffix.encode())
    head = database.encode()[:room].decode("utf-8", "ignore")
    return head + suffix
