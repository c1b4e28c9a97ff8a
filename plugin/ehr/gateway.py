"""Pick each practice's EHR writer: the NDJSON sink, or its FHIR server with SMART tokens."""

from collections.abc import Callable
from pathlib import Path

import requests

from plugin.core.models import EhrConnection, Practice
from plugin.ehr.fhir import FhirWriter
from plugin.ehr.keys import NoSigningKeyError, Signer
from plugin.ehr.smart import SmartError, TokenCache, fetch_token
from plugin.ehr.writers import EhrTargetError, EhrWriter, FhirError, sink_for


class EhrClients:
    """Build writers that share one token cache and one HTTP connection pool."""

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
        connection = practice.ehr_connection
        if connection is None or connection.fhir_base != practice.ehr_target:
            raise EhrTargetError("not connected; run `alliance-check ehr connect`")

        def token() -> str:
            try:
                return self._token(practice, connection)
            except (SmartError, NoSigningKeyError) as exc:
                # Worth retrying: keys get generated, EHR admins fix grants, servers come back.
                raise FhirError(f"no token: {exc}", retryable=True) from exc

        return FhirWriter(
            connection.fhir_base,
            connection.facts,
            token,
            lambda: self.tokens.forget(practice.id),
            self.http,
        )

    def _token(self, practice: Practice, connection: EhrConnection) -> str:
        return self.tokens.get(
            practice.id,
            lambda: fetch_token(
                connection.client_id, connection.token_endpoint, connection.scope, self.signer()
            ),
        )
