"""Bearer tokens per source for the ingest server: loaded from a file or env, compared in constant time.

A token file has one ``source: token`` line per source (``#`` starts a comment); the env variable
``BURNWATCH_INGEST_TOKENS`` holds the same as a JSON object ``{"source": "token"}``. Tokens are kept
as ``SecretStr`` and never appear in an error message or a log line; only source names do.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

TOKENS_ENV = "BURNWATCH_INGEST_TOKENS"
TOKENS_FILE_ENV = "BURNWATCH_INGEST_TOKENS_FILE"
MIN_TOKEN_CHARS = 16
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what fits in an Authorization header


class TokenError(ValueError):
    """The token configuration is invalid; the message names the source, never the token."""


class TokenStore:
    """The configured sources and their tokens.

    >>> store = TokenStore({"gw-eu": SecretStr("s3cret-token-0123456")})
    >>> store.authenticate("Bearer s3cret-token-0123456"), store.authenticate("Bearer nope")
    ('gw-eu', None)
    >>> store
    TokenStore(sources=['gw-eu'])
    """

    def __init__(self, tokens: Mapping[str, SecretStr]) -> None:
        if not tokens:
            raise TokenError("no ingest tokens configured: give a tokens file or " + TOKENS_ENV)
        seen: dict[str, str] = {}
        for source, token in tokens.items():
            if not SOURCE_PATTERN.match(source):
                raise TokenError(f"invalid source name {source!r}: letters, digits, '_', '.', '-' (max 64)")
            value = token.get_secret_value()
            if len(value) < MIN_TOKEN_CHARS or not TOKEN_PATTERN.match(value):
                raise TokenError(f"the token of source {source!r} must be at least {MIN_TOKEN_CHARS} "
                                 "visible ASCII characters")
            if value in seen:
                raise TokenError(f"sources {seen[value]!r} and {source!r} have the same token")
            seen[value] = source
        self._tokens = [(name, secret.get_secret_value().encode("ascii")) for name, secret in tokens.items()]

    @property
    def sources(self) -> list[str]:
        """The configured source names."""
        return [source for source, _ in self._tokens]

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the source whose token the ``Authorization: Bearer`` header carries, else ``None``.

        Every token is compared (with ``hmac.compare_digest``) whatever matches, so the time taken
        does not tell which source, or how much of a token, was right.
        """
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        candidate = presented.strip().encode("utf-8", "replace")
        found = None
        for source, token in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = source
        return found

    def __repr__(self) -> str:
        return f"TokenStore(sources={self.sources!r})"


def parse_token_file(text: str, where: str = "tokens file") -> dict[str, SecretStr]:
    r"""Parse ``source: token`` lines (blank lines and ``#`` comments skipped).

    >>> parse_token_file("# gateways\ngw-eu: abcdefghijklmnop\n")
    {'gw-eu': SecretStr('**********')}
    """
    tokens: dict[str, SecretStr] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        source, sep, token = line.partition(":")
        if not sep or not source.strip() or not token.strip():
            raise TokenError(f"{where} line {number}: expected 'source: token'")
        source = source.strip()
        if source in tokens:
            raise TokenError(f"{where} line {number}: source {source!r} appears twice")
        tokens[source] = SecretStr(token.strip())
    return tokens


def parse_token_json(text: str, where: str = TOKENS_ENV) -> dict[str, SecretStr]:
    """Parse a JSON object of source to token.

    >>> parse_token_json('{"gw": "abcdefghijklmnop"}')
    {'gw': SecretStr('**********')}
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise TokenError(f"{where} is not valid JSON") from None  # the text holds tokens: not shown
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise TokenError(f'{where} must be a JSON object {{"source": "token", ...}}')
    return {str(source): SecretStr(token.strip()) for source, token in doc.items()}


def load_tokens(file: Path | None = None, environ: Mapping[str, str] | None = None) -> TokenStore:
    """Load tokens from ``file`` (else ``BURNWATCH_INGEST_TOKENS_FILE``) and ``BURNWATCH_INGEST_TOKENS``.

    Both may be given; a source in both is an error.
    """
    env = environ if environ is not None else {}
    tokens: dict[str, SecretStr] = {}
    path = file or (Path(env[TOKENS_FILE_ENV]) if env.get(TOKENS_FILE_ENV) else None)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise TokenError(f"cannot read tokens file {path}: {error.strerror or error}") from None
        tokens.update(parse_token_file(text, str(path)))
    if env.get(TOKENS_ENV):
        for source, token in parse_token_json(env[TOKENS_ENV]).items():
            if source in tokens:
                raise TokenError(f"source {source!r} is in both {path} and {TOKENS_ENV}")
            tokens[source] = token
    return TokenStore(tokens)
