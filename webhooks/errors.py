"""Exceptions raised while verifying and parsing inbound webhooks."""

# Every value InvalidSignatureError.reason can take, so metrics can pre-register labels.
SIGNATURE_REASONS = frozenset(
    {
        "missing_headers",
        "malformed_header",
        "unsupported_version",
        "stale_timestamp",
        "future_timestamp",
        "body_not_utf8",
        "bad_signature",
    }
)


class WebhookError(Exception):
    """Base class for every inbound-webhook failure."""


class InvalidSignatureError(WebhookError):
    """Reject a delivery whose headers do not prove it came from the platform."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidPayloadError(WebhookError):
    """Reject a verified delivery whose body breaks the contract.

    `field` is a dotted path such as "data.client.email" (or "body" for the
    document as a whole). `detail` is written by us and never quotes the
    submitted value, so it is safe to log and to return to the sender.
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, detail)
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        """Return the safe detail, never the submitted value."""
        return self.detail
