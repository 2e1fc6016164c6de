"""The shell every module shares: the connection options, and "run the request or fail, redacted".

A module's ``main()`` builds its argument spec from :data:`CONNECTION_SPEC` (documented once, in
``plugins/doc_fragments/connection.py``) and hands its work to :func:`run_request`, which parses each URL
once into a :class:`ConnInfo` and passes that object down. Whatever happens, the module exits through one
place that removes every secret of the connection from the result or the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, raw_secrets, redact

# Every module that connects takes these; their documentation is the doc fragment `connection`.
CONNECTION_SPEC: dict[str, dict[str, Any]] = {
    "url": {"type": "str", "required": True, "no_log": True},
}
VERSION_TABLE_SPEC: dict[str, dict[str, Any]] = {
    "version_table": {"type": "str", "default": "alembic_version"},
}


def argument_spec(*parts: dict[str, dict[str, Any]], **own: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shared option groups plus the module's own options, as one argument spec."""
    spec: dict[str, dict[str, Any]] = {}
    for part in parts:
        spec.update(part)
    spec.update(own)
    return spec


def run_request(module, work: Callable[..., dict[str, Any]], *, what: str, urls: tuple[str | None, ...] = (),
                interrupted: str = "") -> None:
    """Parse each of ``urls`` once into a ConnInfo, run ``work(*conns)`` and exit the module with its result,
    or fail with an operator-facing message.

    Every exit path is redacted with the connections' secrets (and PGPASSWORD); a URL that cannot be parsed
    has its user-info withheld. An OperatorError keeps its hint and details; an interruption (SIGTERM from
    Ansible's timeout) says what was cleaned up; anything unforeseen is named without a traceback.
    """
    secrets = raw_secrets(*urls)
    try:
        conns = [ConnInfo.parse(url) if url else None for url in urls]
        secrets = sorted({s for c in conns if c for s in c.secrets} | set(secrets), key=len, reverse=True)
        result = work(*conns)
    except OperatorError as err:
        module.fail_json(msg=redact(str(err), secrets), hint=redact(err.hint, secrets),
                         **redact(err.details, secrets))
    except KeyboardInterrupt as err:
        module.fail_json(msg=redact(f"{what} interrupted ({err}). {interrupted}".strip(), secrets))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: explained, redacted, no traceback
        module.fail_json(msg=redact(f"{what} failed: {type(exc).__name__}: {exc}. {interrupted}".strip(), secrets))
    module.exit_json(**redact(result, secrets))
