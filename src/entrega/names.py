"""The one rule for each kind of name a user gives entrega, checked wherever it enters.

A version becomes a directory (``<state>/releases/<app>/<version>``), a header value, a
cookie value and a map key in the routers; an app or environment name becomes a
directory, a router name and part of a URL. So each is refused at the door (config file,
API, webhook, CLI) with one message, instead of failing deep inside with a 500, or worse,
escaping a directory (``../x``).

:class:`InvalidName` is both a ``ValueError`` (so pydantic validators report it as a field
error) and an :class:`EntregaError` answered 400 wherever it escapes.
"""

from __future__ import annotations

import re

from entrega.errors import InvalidName

#: letters, digits and . _ + -; starts with a letter or digit (so never "." or "..")
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}$"
#: lowercase letters, digits and -, like DNS labels (they name processes and directories)
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION_RULE = ("letters, digits and . _ + -, starting with a letter or digit, "
                "at most 128 characters")
NAME_RULE = "lowercase letters, digits and '-', starting with a letter or digit, at most 63"

_VERSION = re.compile(VERSION_PATTERN)
_NAME = re.compile(NAME_PATTERN)


# (fullmatch: with match, "$" would also accept a trailing newline)
def is_version(value: object) -> bool:
    return isinstance(value, str) and _VERSION.fullmatch(value) is not None


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_version(value: object) -> str:
    """``value`` if it is a valid version, else :class:`InvalidName`."""
    if not isinstance(value, str) or not is_version(value):
        raise InvalidName(f"invalid version {_shown(value)}: use {VERSION_RULE}")
    return value


def check_optional_version(value: str | None) -> str | None:
    return None if value is None else check_version(value)


def check_name(value: object, *, what: str = "name") -> str:
    """``value`` if it is a valid app or environment name (``what`` says which)."""
    if not isinstance(value, str) or not is_name(value):
        raise InvalidName(f"invalid {what} {_shown(value)}: use {NAME_RULE} "
                          "(like 'production' or 'shop-api')")
    return value


def check_environment(value: object) -> str:
    return check_name(value, what="environment")


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else "(not a string)"
    return text if len(text) <= 80 else text[:77] + "..."
