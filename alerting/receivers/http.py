"""One HTTP request with the standard library, answering a status instead of raising.

The receivers use this (and slack-sdk, which also uses urllib) so burnwatch needs no extra HTTP
dependency. Status 0 means no answer: refused, reset or timed out.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back; ``status`` 0 when nothing did (``error`` says why)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    def json(self) -> Any:
        """Return the body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


def request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> HttpResponse:
    """Send one request; never raises for network errors or HTTP error statuses."""
    req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310 - scheme checked in config
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked in config
            return HttpResponse(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, dict(error.headers.items()), error.read())
    except (
        urllib.error.URLError,
        TimeoutError,
        ConnectionError,
        http.client.HTTPException,
        OSError,
    ) as error:
        reason = getattr(error, "reason", error)
        return HttpResponse(0, error=f"{type(error).__name__}: {reason}")
