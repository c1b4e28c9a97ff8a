"""The one EHR gateway: per practice, a writer and a searcher sharing tokens and HTTP pool.

Every other module reaches a practice's EHR through `EhrClients`: the drain writes with
`writer_for`, client resolution searches Patients and the flag step searches Observations
with `searcher_for`. Each use gets a token of its own scopes (the write token keeps its
create-only scopes, so an EHR that refuses reads still takes writes), all from one cache.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from plugin.core.models import EhrConnection, Practice
from plugin.ehr.errors import EhrError, EhrTargetError, NoTokenError
from plugin.ehr.fhir import FhirClient, FhirWriter
from plugin.ehr.keys import Signer
from plugin.ehr.smart import TokenCache, fetch_token, search_scope
from plugin.ehr.writers import EhrWriter, sink_for


class EhrClients:
    """Build writers and searchers that share one token cache and one HTTP connection pool."""

    def __init__(
        self, root: Path, tokens: TokenCache, signer: Callable[[], Signer], http: requests.Session
    ):
        self.root = root
        self.tokens = tokens
        self.signer = signer
        self.http = http

    def writer_for(self, practice: Practice) -> EhrWriter:
        """Return the writer for this practice's own EHR, and no other."""
        if practice.ehr_target.startswith("ndjson:"):
            return sink_for(practice.ehr_target, self.root)
        connection = self._connection(practice)
        history = None
        if connection.facts.get("observation_search", False):
            # The rule's read of earlier scores, with a token of its own read scope.
            history = lambda: self.searcher_for(practice, ["Observation"])  # noqa: E731
        return FhirWriter(
            connection.fhir_base,
            connection.facts,
            self._token_for(practice.id, connection, connection.scope),
            lambda: self.tokens.forget(practice.id),
            self.http,
            history,
        )

    def searcher_for(self, practice: Practice, resource_types: Sequence[str]) -> FhirClient:
        """Return a searcher of the practice's own FHIR server, with read scopes for these types.

        Raises EhrTargetError for an NDJSON target or an unconnected practice; whether the
        server offers the search at all is the caller's question (it reads the facts).
        """
        if practice.ehr_target.startswith("ndjson:"):
            raise EhrTargetError("an NDJSON target cannot be searched")
        connection = self._connection(practice)
        smart_v2 = connection.facts.get("smart_v2", True)
        scope = " ".join(search_scope(kind, smart_v2) for kind in resource_types)
        key = f"{practice.id}:search:" + "+".join(resource_types)
        return FhirClient(
            connection.fhir_base,
            self._token_for(key, connection, scope),
            lambda: self.tokens.forget(key),
            self.http,
        )

    @staticmethod
    def _connection(practice: Practice) -> EhrConnection:
        connection = practice.ehr_connection
        if connection is None or connection.fhir_base != practice.ehr_target:
            raise EhrTargetError("not connected; run `alliance-check ehr connect`")
        return connection

    def _token_for(self, key: str, connection: EhrConnection, scope: str) -> Callable[[], str]:
        """Return a function giving a live token of `scope`, cached under `key`."""

        def token() -> str:
            try:
                return self.tokens.get(
                    key,
                    lambda: fetch_token(
                        connection.client_id, connection.token_endpoint, scope, self.signer()
                    ),
                )
            except EhrError as exc:
                raise NoTokenError(f"no token: {exc.reason}") from exc

        return token
