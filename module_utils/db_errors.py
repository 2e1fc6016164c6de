"""One translation of PostgreSQL errors into OperatorError: what happened, and what to do about it.

Every module_utils entry point that talks to the database wraps its work in :func:`explained`, so an
unexpected psycopg2 error reaches the operator as a sentence with a fix chosen by its SQLSTATE, never
as a traceback.
"""

from __future__ import annotations

import contextlib
import functools

from ansible.module_utils.operator_error import OperatorError

# SQLSTATE -> the fix. https://www.postgresql.org/docs/current/errcodes-appendix.html
_HINTS = {
    "42501": "The role in the URL lacks a privilege this step needs: grant it (the message names it), or use "
             "a role that has it.",
    "55006": "Other sessions are using the database (see pg_stat_activity); stop them (maintenance_mode scales "
             "the app's writers down) or wait until they are gone, then rerun.",
    "55P03": "A lock was not granted in time: a long transaction holds the table. Retry when it is gone "
             "(pg_inspect monitoring lists the lock waits).",
    "57014": "A statement ran longer than statement_timeout (or was cancelled); raise the timeout if the work "
             "is expected to take that long.",
    "57P01": "The server terminated the session (an administrator, or a restart); check the server log and rerun.",
    "53100": "The database server ran out of disk space; free space on its volume, then rerun.",
    "53200": "The database server ran out of memory; lower the parallelism or the work_mem and rerun.",
    "25006": "A write was attempted in a read-only transaction (a replica, or default_transaction_read_only); "
             "point the URL at the primary.",
    "3D000": "The database does not exist; fix the name in the URL or create it.",
}
_CONNECTION_HINT = "The connection to the server was lost; check the server and the network, then rerun."
_DEFAULT_HINT = "Check the role's privileges on the database and the server log; then rerun."


_SESSIONS_HINT = (
    "Other sessions are connected to the database and this role may not end them (DROP DATABASE ... WITH (FORCE) "
    "needs the right to terminate them): stop the app's writers (maintenance_mode), grant the role "
    "pg_signal_backend, or ask a superuser; see pg_stat_activity for who is connected."
)


def hint_for(exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None) or ""
    if code == "42501" and "terminate" in str(exc):
        return _SESSIONS_HINT
    if code in _HINTS:
        return _HINTS[code]
    if code.startswith("08") or (not code and "connection" in str(exc).lower()):
        return _CONNECTION_HINT
    return _DEFAULT_HINT


def translate(exc: BaseException, what: str) -> OperatorError:
    """``what`` failed on ``exc``: the server's message and the fix for its SQLSTATE."""
    text = (getattr(exc, "pgerror", None) or str(exc)).strip() or type(exc).__name__
    code = getattr(exc, "pgcode", None)
    return OperatorError(f"{what} failed on a database error: {text}", hint_for(exc), sqlstate=code)


@contextlib.contextmanager
def explained(what: str):
    """Turn a psycopg2 error raised inside into the OperatorError :func:`translate` makes."""
    import psycopg2

    try:
        yield
    except psycopg2.Error as exc:
        raise translate(exc, what) from None


def database_errors_explained(what: str):
    """Decorator form of :func:`explained`."""

    def wrap(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            with explained(what):
                return func(*args, **kwargs)

        return inner

    return wrap
