"""One way to report a config file's validation errors: ``FILE: key.path[i].field: message (got VALUE)``.

The price catalog, the allocation file and the budgets file render their pydantic errors here, so a
user meets the same shape of message whichever file is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

# pydantic names union members and validator functions in the location; readers don't
_UNION_TAG = re.compile(r"^(?:str|bool|int|float|none|constrained-str|(?:dict|list|union)\[.*\]|function-.*|"
                        r"tagged-union.*)$")

_SHORT_MESSAGES = {
    "extra_forbidden": "is not a known key",
    "string_too_short": "must not be empty",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "finite_number": "must be a finite number",
}


def key_path(loc: Iterable[int | str]) -> str:
    """Return a pydantic location as a key path, ``""`` for the top level.

    >>> key_path(("budgets", 0, "function-after[check()]", "scope", "team"))
    'budgets[0].scope.team'
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(str(part)):
            out += f".{part}" if out else str(part)
    return out


def shown(value: Any) -> str:
    """Return a value as a message shows it: strings quoted, floats short, the rest as written.

    >>> from datetime import date
    >>> shown("gpu"), shown(0.5), shown(-1.0), shown(3), shown(date(2026, 1, 1))
    ("'gpu'", '0.5', '-1', '3', '2026-01-01')
    """
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def describe_validation_error(error: ValidationError, where: str) -> str:
    """Render a validation error as lines ``FILE: key.path: message (got VALUE)``, each once.

    A check of our own (a ``ValueError`` raised in a validator) may start a line with the key path below
    the object it checked (``"[2].name: ..."``); the line then names the joined path, and the message
    names the value itself. An error about a whole entry (a missing key, a bad mapping or list) shows
    no value: its key path says enough.
    """
    lines: list[str] = []
    for err in error.errors():
        path = key_path(err["loc"])
        template = _SHORT_MESSAGES.get(err["type"])
        ctx = {key: shown(value) for key, value in (err.get("ctx") or {}).items()}
        message = template.format(**ctx) if template else str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        for part in message.splitlines():
            own = re.match(r"^(.+?): ", part) if err["type"] == "value_error" else None
            if own:
                sub = own.group(1)
                joined = sub if not path else f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"
                line = f"{where}: {joined}: {part[own.end():]}"
            else:
                bare = err["type"] == "missing" or isinstance(value, Mapping | list)
                line = f"{where}: {path or '(top level)'}: {part}{'' if bare else f' (got {shown(value)})'}"
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)
