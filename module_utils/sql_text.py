"""SQL text as PostgreSQL reads it: statements split at top-level semicolons, literals masked.

Knows quoted strings ('..', E'..', U&'..'), quoted identifiers, dollar quotes ($$..$$, $tag$..$tag$) and
comments, so a semicolon inside them does not split a statement and a secret inside them never reaches
a report.
"""

from __future__ import annotations

import re

QUERY_TEXT_LIMIT = 500

# Every literal a query text can carry a secret in: $tag$...$tag$, E'...' (backslash escapes), U&'...', '...'.
_LITERAL = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?\$\1\$|[Ee]'(?:[^'\\]|\\.|'')*'?|(?:[Uu]&)?'(?:[^']|'')*'?",
                      re.S)


def mask_sql_secrets(text: str | None) -> str | None:
    """Query text from pg_stat_activity / pg_stat_statements with every literal masked: a password (or any
    secret) written as a string in someone's statement never reaches a report."""
    if text is None:
        return None
    return _LITERAL.sub("'********'", text)[:QUERY_TEXT_LIMIT]


def _skip_comment(query: str, i: int) -> int | None:
    """Where a comment starting at ``i`` ends (nested /* */ as PostgreSQL nests them), or None."""
    if query.startswith("--", i):
        end = query.find("\n", i)
        return len(query) if end < 0 else end + 1
    if not query.startswith("/*", i):
        return None
    depth, i = 1, i + 2
    while i < len(query) and depth:
        if query.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif query.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _skip_quoted(query: str, i: int) -> int | None:
    """Where a string, quoted identifier or dollar-quoted body starting at ``i`` ends, or None."""
    ch, n = query[i], len(query)
    if ch == "'":
        escapes = i > 0 and query[i - 1] in "eE" and (i < 2 or not (query[i - 2].isalnum() or query[i - 2] == "_"))
        i += 1
        while i < n:
            if escapes and query[i] == "\\" or query.startswith("''", i):
                i += 2
            elif query[i] == "'":
                return i + 1
            else:
                i += 1
        return n
    if ch == '"':
        end = query.find('"', i + 1)
        while end >= 0 and query.startswith('""', end):
            end = query.find('"', end + 2)
        return n if end < 0 else end + 1
    if ch == "$" and not (i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")):
        match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", query[i:])
        if match:
            end = query.find(match.group(0), i + len(match.group(0)))
            return n if end < 0 else end + len(match.group(0))
    return None


def split_with_spans(query: str) -> list[tuple[int, str, int]]:
    """(line number of its first character, statement, offset just past its semicolon) for each statement at a
    top-level semicolon (for the last one without a semicolon: the end). Blank or comment-only ones are dropped.
    """
    out: list[tuple[int, str, int]] = []
    start, i, first = 0, 0, None
    while i < len(query):
        skipped = _skip_comment(query, i)
        if skipped is not None:
            i = skipped
            continue
        ch = query[i]
        if ch == ";":
            if first is not None:
                out.append((query.count("\n", 0, first) + 1, query[start:i].strip(), i + 1))
            start, i, first = i + 1, i + 1, None
            continue
        if not ch.isspace() and first is None:
            first = i
        i = _skip_quoted(query, i) or (i + 1)
    if first is not None:
        out.append((query.count("\n", 0, first) + 1, query[start:].strip(), len(query)))
    return out


def split_with_lines(query: str) -> list[tuple[int, str]]:
    """(line number of its first character, statement) for each statement at a top-level semicolon.

    Statements that are only blanks or comments are dropped.
    """
    return [(line, text) for line, text, _ in split_with_spans(query)]


def split_statements(query: str) -> list[str]:
    """Split SQL text into its statements at top-level semicolons (see :func:`split_with_lines`).

    Used to refuse multi-statement smoke queries: ``COMMIT; DELETE ...`` would otherwise leave the
    read-only transaction.
    """
    return [statement for _, statement in split_with_lines(query)]
