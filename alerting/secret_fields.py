"""Which config fields may hold a secret, by name: their values never appear in a config error."""

from __future__ import annotations

# a field whose name has one of these may hold a secret (a Slack webhook URL is one); used by the alerting
# config's errors (``alerting.config.describe_error``) and the worker settings' (``streams.settings``)
SECRET_WORDS = ("token", "key", "secret", "pass", "url", "auth", "header")


def may_be_secret(field: str) -> bool:
    """Whether a field named ``field`` (a dotted path too) may hold a secret.

    >>> may_be_secret("receivers.ops.slack.webhook_url"), may_be_secret("kafka_sasl_password")
    (True, True)
    >>> may_be_secret("topic_partitions")
    False
    """
    name = field.lower()
    return any(word in name for word in SECRET_WORDS)
