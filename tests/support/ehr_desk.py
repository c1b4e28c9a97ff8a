"""The EHR's side of a Zoom practice: connect it to the test FHIR server and file Patients."""

import json

import requests

from plugin.ehr.keys import current_signer, generate
from plugin.ehr.smart import fetch_token
from tests.support.data import DATA

UUID = "4444AAAiAAAAAiAiAiiAii=="
PARTICIPANTS = json.loads((DATA / "zoom" / "participants.json").read_text())["participants"]
PATIENTS = json.loads((DATA / "zoom" / "patients.json").read_text())
WRITE_AND_SEARCH = "system/QuestionnaireResponse.c system/Observation.c system/Patient.rs"


class Ehr:
    """Connect practices to the test FHIR server as an operator would, and file Patients."""

    def __init__(self, app, client, db, runner, server, oauth):
        self.app, self.db, self.runner, self.server, self.oauth = app, db, runner, server, oauth
        server.reset()
        oauth.reset()
        generate(db, app.extensions["vault"], "ES384")
        jwks = client.get("/.well-known/jwks.json").json
        oauth.register_client("alliance", jwks=jwks, scopes=WRITE_AND_SEARCH)
        # The EHR's own records desk, which files Patients; Alliance Check never may.
        oauth.register_client("records", jwks=jwks, scopes="system/Patient.c")

    def connect(self, account_id: str) -> None:
        """Run `ehr connect` for a Zoom practice."""
        result = self.runner.invoke(
            args=[
                *("ehr", "connect", account_id, self.server.base_url),
                *("--client-id", "alliance", "--platform", "zoom"),
            ]
        )
        assert result.exit_code == 0, result.output

    def file(self, *names: str) -> dict[str, str]:
        """Create Patients from tests/data/zoom/patients.json; return their ids by name."""
        signer = current_signer(self.db, self.app.extensions["vault"])
        token = fetch_token("records", self.oauth.token_endpoint, "system/Patient.c", signer)
        ids = {}
        for name in names:
            response = requests.post(
                f"{self.server.base_url}/Patient",
                json=PATIENTS[name],
                timeout=10,
                headers={
                    "Authorization": f"Bearer {token['access_token']}",
                    "Content-Type": "application/fhir+json",
                },
            )
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        return ids
