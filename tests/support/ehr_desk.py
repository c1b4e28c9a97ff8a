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
# With the schedule's reads too, so Zoom clients can be found by their Appointments.
WITH_SCHEDULE = WRITE_AND_SEARCH + " system/Appointment.rs system/Practitioner.rs"
# With the Consent read too, so a client's consent to texts is read from the EHR.
WITH_CONSENT = WITH_SCHEDULE + " system/Consent.rs"
RECORDS = "system/Patient.c system/Practitioner.c system/Appointment.c system/Consent.cu"


class Ehr:
    """Connect practices to the test FHIR server as an operator would, and file Patients."""

    def __init__(self, app, client, db, runner, server, oauth, scopes=WRITE_AND_SEARCH):
        self.app, self.db, self.runner, self.server, self.oauth = app, db, runner, server, oauth
        server.reset()
        oauth.reset()
        generate(db, app.extensions["vault"], "ES384")
        jwks = client.get("/.well-known/jwks.json").json
        oauth.register_client("alliance", jwks=jwks, scopes=scopes)
        # The EHR's own records desk, which files Patients, Practitioners and Appointments;
        # Alliance Check never may.
        oauth.register_client("records", jwks=jwks, scopes=RECORDS)
        self._token = None

    def connect(self, account_id: str, platform: str = "zoom", *options: str) -> str:
        """Run `ehr connect` for a practice (Zoom's by default); return what it printed."""
        result = self.runner.invoke(
            args=[
                *("ehr", "connect", account_id, self.server.base_url),
                *("--client-id", "alliance", "--platform", platform, *options),
            ]
        )
        assert result.exit_code == 0, result.output
        return result.output

    def post(self, resource: dict) -> str:
        """Create any resource as the records desk; return its id."""
        response = requests.post(
            f"{self.server.base_url}/{resource['resourceType']}",
            json=resource,
            timeout=10,
            headers=self._headers(),
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def put(self, resource_id: str, resource: dict) -> None:
        """Update a resource as the records desk (only Consents: the desk may update those)."""
        response = requests.put(
            f"{self.server.base_url}/{resource['resourceType']}/{resource_id}",
            json={**resource, "id": resource_id},
            timeout=10,
            headers=self._headers(),
        )
        assert response.status_code == 200, response.text

    def _headers(self) -> dict:
        if self._token is None:
            signer = current_signer(self.db, self.app.extensions["vault"])
            self._token = fetch_token("records", self.oauth.token_endpoint, RECORDS, signer)
        return {
            "Authorization": f"Bearer {self._token['access_token']}",
            "Content-Type": "application/fhir+json",
        }

    def file(self, *names: str) -> dict[str, str]:
        """Create Patients from tests/data/zoom/patients.json; return their ids by name."""
        return {name: self.post(PATIENTS[name]) for name in names}
