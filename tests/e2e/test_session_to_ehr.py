"""One session end to end: webhook, mail over real SMTP, page, answers, Bundle in the sink."""

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plugin.core.logs import JsonFormatter
from plugin.jobs import tick
from tests.support.data import load_json, session_ended

SUBMISSION = load_json("fhir/submissions.json")["mixed"]
EMAIL, PHONE = "sam.rivera@example.org", "+12025550143"


def read_ndjson(path: Path) -> list[dict]:
    """Read every resource in an NDJSON file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_session_travels_from_webhook_to_ehr_without_phi_in_logs(
    mail_app, smtp, webhooks, practice, client, caplog
):
    caplog.set_level(logging.DEBUG)
    payload = session_ended("s-42", email=EMAIL, phone=PHONE)
    assert webhooks.post(payload).status_code == 204

    tick(mail_app)
    [message] = smtp.messages
    link = re.search(r"http://localhost(/q/[\w-]+)", message.get_body(("plain",)).get_content())
    path = link.group(1)

    page = client.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    thanks = client.post(path, data={"csrf_token": csrf, **SUBMISSION["form"]})
    assert thanks.status_code == 200

    tick(mail_app)
    ehr = Path(mail_app.instance_path) / "ehr"
    [response] = read_ndjson(ehr / "QuestionnaireResponse.ndjson")
    observations = read_ndjson(ehr / "Observation.ndjson")
    assert response["status"] == "completed"
    assert response["subject"] == {"reference": "Patient/c1"}
    assert response["encounter"] == {"reference": "Encounter/e1"}
    assert response["questionnaire"].endswith("|1.0.0")
    scores = {o["code"]["coding"][0]["code"]: o["valueQuantity"]["value"] for o in observations}
    assert {k: str(v) for k, v in scores.items()} == SUBMISSION["expected"]
    for observation in observations:
        assert observation["derivedFrom"] == [
            {"reference": f"QuestionnaireResponse/{response['id']}"}
        ]
        effective = datetime.fromisoformat(observation["effectiveDateTime"])
        assert effective == datetime.fromisoformat(payload["data"]["ended_at"])

    # A second tick, long after, writes nothing twice and sends nothing more.
    tick(mail_app, datetime.now(UTC) + timedelta(days=4))
    assert len(read_ndjson(ehr / "Observation.ndjson")) == len(observations)
    assert len(smtp.messages) == 1

    formatter = JsonFormatter()
    # mail.log is the test SMTP server's own log (the mailbox side), not ours.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    logged = "\n".join(formatter.format(record) for record in ours)
    assert "invitation.sent" in logged and "ehr_write.done" in logged
    secrets = [EMAIL, PHONE, "Could we start a little later?", path.removeprefix("/q/")]
    for secret in secrets:
        assert secret not in logged
