"""Keeping secrets out of what sigstream prints: the passwords of URLs.

A pure string function, so every adapter and command can use it without importing each other. A URL's
password (``redis://user:pw@host``, ``?password=pw``) is replaced by ``***``; the user name stays, since it
says which account was used.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ (the user may be empty: redis://:password@host)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?P<secret>[^@\s/]*)@")
# password=... / passwd=... / secret=... / token=... in a query string
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pass|secret|token|sasl_password)=)(?P<secret>[^&;#\s]*)",
                    re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it masked (``redis://u:***@host:6379/0``)."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)

