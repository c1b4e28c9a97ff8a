"""Talk to a FHIR R4 server: search it, and write transaction Bundles the way it can take them.

`FhirClient` owns the one request loop (bearer token, one refresh on 401, error classes) and
searches; `FhirWriter` adds writing. plugin.ehr.gateway builds both per practice, each with
the token of its own scopes.
"""

from collections.abc import Callable
from typing import Any

import requests

from fhir_mappings.fallback import observations_only
from fhir_mappings.references import rewrite
from plugin.ehr.errors import FhirError

TIMEOUT = (5, 60)
FHIR_JSON = "application/fhir+json"
# Score Observations read back for the rupture rule: 4 per session, so 125 sessions.
HISTORY_COUNT = 500


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    # Servers send seconds in practice; an HTTP-date is treated as "use the backoff".
    return float(value) if value.isdigit() else None


def _outcome(response: requests.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return (
        body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    )


def _error_for(response: requests.Response) -> FhirError:
    """Classify a failed response: which failures can a retry fix?"""
    status = response.status_code
    reason = f"FHIR server answered {status}"
    # 401 even with a fresh token: usually the EHR has not fetched our rotated JWKS yet.
    if status in (401, 408, 429) or status >= 500:
        return FhirError(
            reason, retryable=True, response=response, retry_after=_retry_after(response)
        )
    # 400/422 with an OperationOutcome, 403 (scope), 404, 409, 412 (ambiguous match): a resend
    # of the same write fails the same way, so it goes to dead letter for a person to read.
    return FhirError(reason, retryable=False, response=response, outcome=_outcome(response))


class FhirClient:
    """Search one practice's FHIR server, through the one request loop every call takes."""

    def __init__(
        self,
        base: str,
        token: Callable[[], str],
        forget_token: Callable[[], None],
        http: requests.Session,
    ):
        self.base = base.rstrip("/")
        self.token = token
        self.forget_token = forget_token
        self.http = http

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        """Return the resources of the first page of a search (not its includes or outcomes)."""
        reply = self._request("GET", resource_type, None, params=params).json()
        if not (isinstance(reply, dict) and reply.get("type") == "searchset"):
            raise FhirError("search answered something other than a searchset", retryable=False)
        return [
            entry["resource"]
            for entry in reply.get("entry") or []
            if isinstance(entry.get("resource"), dict)
            and entry["resource"].get("resourceType") == resource_type
            and entry.get("search", {}).get("mode", "match") == "match"
        ]

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict | None = None,
        params: dict | None = None,
    ) -> requests.Response:
        """Send one call with a bearer token; on 401 get a new token and try once more."""
        content = {"Content-Type": FHIR_JSON} if body is not None else {}
        for attempt in (1, 2):
            try:
                response = self.http.request(
                    method,
                    f"{self.base}/{path}".rstrip("/"),
                    json=body,
                    params=params,
                    timeout=TIMEOUT,
                    headers={
                        "Authorization": f"Bearer {self.token()}",
                        "Accept": FHIR_JSON,
                        **content,
                        **(headers or {}),
                    },
                )
            except requests.RequestException as exc:
                raise FhirError(
                    f"FHIR server unreachable ({type(exc).__name__})", retryable=True
                ) from exc
            if response.status_code != 401 or attempt == 2:
                break
            self.forget_token()
        if response.status_code >= 400:
            raise _error_for(response)
        return response


class FhirWriter(FhirClient):
    """Send one response's Bundle to one practice's FHIR server."""

    def __init__(
        self,
        base: str,
        facts: dict,
        token: Callable[[], str],
        forget_token: Callable[[], None],
        http: requests.Session,
        history: Callable[[], "FhirClient"] | None = None,
    ):
        super().__init__(base, token, forget_token, http)
        self.facts = facts
        self.history = history

    def flags_unavailable(self) -> str | None:
        """Return why this server takes no Flags from us, or None."""
        if not self.facts.get("flag_write"):
            return "the EHR connection has no Flag scope (run `alliance-check ehr connect` again)"
        if self.history is None:
            return "earlier scores cannot be read (Observation search not offered or not granted)"
        return None

    def score_history(self, patient: str, score_codes: tuple[str, ...]) -> list[dict]:
        """Return the patient's earlier score Observations, read with their own read token."""
        return self.history().search(
            "Observation",
            {
                "subject": patient,
                "code": ",".join(score_codes),
                "_sort": "date",
                "_count": str(HISTORY_COUNT),
            },
        )

    def write(self, bundle: dict) -> str:
        """Write the bundle and return the path taken."""
        prefix = ""
        if not self.facts["questionnaire_response_create"]:
            bundle, prefix = observations_only(bundle), "observations-only+"
        if self.facts["transaction"]:
            self._transaction(bundle)
            return prefix + "transaction"
        self._one_by_one(bundle)
        return prefix + "individual"

    def _transaction(self, bundle: dict) -> None:
        reply = self._request("POST", "", bundle).json()
        statuses = [e.get("response", {}).get("status", "") for e in reply.get("entry", [])]
        if len(statuses) != len(bundle["entry"]) or not all(s[:1] == "2" for s in statuses):
            raise FhirError("transaction-response has a failed entry", retryable=False)

    def _one_by_one(self, bundle: dict) -> None:
        # Entries are in dependency order (the response before what is derived from it), so
        # each reference can be pointed at the id the server just gave.
        ids: dict[str, str] = {}
        for entry in bundle["entry"]:
            resource = rewrite(entry["resource"], ids)
            kind = resource["resourceType"]
            if entry["request"]["method"] == "PUT":  # a conditional update (a repaired Flag)
                self._request("PUT", entry["request"]["url"], resource)
                continue
            response = self._request(
                "POST", kind, resource, {"If-None-Exist": entry["request"]["ifNoneExist"]}
            )
            ids[entry["fullUrl"]] = f"{kind}/{self._created_id(response, kind)}"

    @staticmethod
    def _created_id(response: requests.Response, kind: str) -> str:
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if location:
            # .../Observation/123/_history/1 -> 123
            parts = location.split("/")
            return parts[parts.index(kind) + 1] if kind in parts else parts[-1]
        body = response.json() if response.content else {}
        if body.get("id"):
            return body["id"]
        raise FhirError(f"{kind} create returned no id", retryable=False)
