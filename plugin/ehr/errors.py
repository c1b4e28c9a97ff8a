"""One exception tree for everything the EHR side can fail at: FHIR calls, SMART, our keys.

Callers that only need "the EHR did not work out" catch `EhrError`; `retryable` says whether
the same call may succeed later, and `reason` is safe to store and show (a status, a type,
an OAuth error code), never a resource or an answer.
"""


class EhrError(Exception):
    """Root of every EHR failure; `reason` is safe to store, `retryable` says "try later"."""

    retryable = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FhirError(EhrError):
    """A FHIR call failed; `retryable` says whether the same call may succeed later.

    `outcome` is the server's OperationOutcome, whose diagnostics may quote the resource, so
    it is sealed before it is stored.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        response: object = None,
        retry_after: float | None = None,
        outcome: dict | None = None,
    ):
        super().__init__(reason)
        self.retryable = retryable
        self.response = response
        self.retry_after = retry_after
        self.outcome = outcome


class NoTokenError(FhirError):
    """A FHIR call could not start: no token (SMART refused, or no key to sign with)."""

    def __init__(self, reason: str) -> None:
        # Worth retrying: keys get generated, EHR admins fix grants, servers come back.
        super().__init__(reason, retryable=True)


class SmartError(EhrError):
    """A FHIR server could not be discovered or would not grant a token."""

    def __init__(self, reason: str, response: object = None):
        super().__init__(reason)
        self.response = response


class NoSigningKeyError(EhrError):
    """No key can sign: run `alliance-check keys generate`."""


class EhrTargetError(EhrError, ValueError):
    """An EHR target is not one we can write to (not connected, or a malformed target)."""

    retryable = False
