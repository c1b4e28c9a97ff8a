"""The test FHIR server is a real R4 server, and a strict one.

It is Medplum's FhirRouter over its MemoryRepository (tests/support/fhir_server/server.mjs), started
once per module. These tests pin down what the rest of the suite relies on: transactions with
conditional creates and urn:uuid rewriting, rejection of invalid resources with 400 and an
OperationOutcome, CapabilityStatement variants, bearer tokens, and the outage controls.
"""

import copy
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from fhir_mappings.bundle import ResponseContext, build_transaction
from fhir_mappings.instrument import load_bundled
from fhir_mappings.scoring import score, validate_answers
from tests.support import fhir_server

DATA = Path(__file__).parents[1] / "data" / "fhir"
SUBMISSIONS = json.loads((DATA / "submissions.json").read_text())
CONTEXT = json.loads((DATA / "response-context.json").read_text())
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TOKEN_ENDPOINT = "https://auth.ehr.example/oauth2/token"


def transaction(**changes) -> dict:
    """Build the product's transaction Bundle for the "mixed" sample submission."""
    values = {**CONTEXT, **changes}
    for key in ("authored", "session_ended_at"):
        values[key] = datetime.fromisoformat(values[key])
    instrument = load_bundled()
    answers, errors = validate_answers(instrument, SUBMISSIONS["mixed"]["form"])
    assert errors == {}
    return build_transaction(
        instrument, answers, score(instrument, answers), ResponseContext(**values)
    )


def post(server, path: str, body, headers=FHIR_JSON, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.base_url}{path}", json=body, headers=headers, timeout=10, **kwargs
    )


def get(server, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{server.base_url}{path}", timeout=10, **kwargs)


def search(server, resource_type: str, identifier: str) -> list[dict]:
    response = get(server, f"/{resource_type}", params={"identifier": identifier})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return [entry["resource"] for entry in bundle.get("entry", [])]


def issues(response: requests.Response) -> list[str]:
    """Return the OperationOutcome's issues as "expression: text" strings (asserting it is one)."""
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [
        f"{','.join(i.get('expression', []))}: {i['details']['text']}" for i in outcome["issue"]
    ]


def observation(**changes) -> dict:
    """Return the total-score Observation of the sample Bundle, standalone and changed."""
    obs = copy.deepcopy(transaction()["entry"][1]["resource"])
    obs["derivedFrom"] = [{"reference": "QuestionnaireResponse/q1"}]
    obs["identifier"] = [{"system": CONTEXT["identifier_system"], "value": uuid.uuid4().hex}]
    obs.update(changes)
    return obs


@pytest.fixture(scope="module")
def ehr():
    """The default server: transactions, QuestionnaireResponse create, SMART v2."""
    with fhir_server.running("--token-endpoint", TOKEN_ENDPOINT) as server:
        yield server


@pytest.fixture
def fhir(ehr):
    """The default server, emptied of resources, counters and injected failures."""
    ehr.reset()
    return ehr


# -- the product's transaction --------------------------------------------------------------


def test_a_transaction_creates_the_response_and_four_observations(fhir):
    bundle = transaction()
    response = post(fhir, "/", bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201"] * 5
    assert fhir.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}

    qr_location = result["entry"][0]["response"]["location"]
    qr_type, qr_id, history, _version = qr_location.split("/")
    assert (qr_type, history) == ("QuestionnaireResponse", "_history")
    (stored_qr,) = search(fhir, "QuestionnaireResponse", f"{CONTEXT['identifier_system']}|")
    assert stored_qr["id"] == qr_id
    assert stored_qr["identifier"]["value"] == CONTEXT["response_id"]
    assert stored_qr["subject"] == {"reference": "Patient/c1"}

    for entry in bundle["entry"][1:]:
        ident = entry["request"]["ifNoneExist"].removeprefix("identifier=")
        (obs,) = search(fhir, "Observation", ident)
        # The urn:uuid placeholder became a reference to the QuestionnaireResponse created.
        assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{qr_id}"}]
        assert (
            get(fhir, f"/Observation/{obs['id']}").json()["valueQuantity"]
            == (entry["resource"]["valueQuantity"])
        )


def test_posting_the_same_transaction_again_creates_nothing(fhir):
    first = post(fhir, "/", transaction()).json()
    again = post(fhir, "/", transaction())
    assert again.status_code == 200, again.text
    entries = again.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200"] * 5
    assert [e["response"]["location"] for e in entries] == [
        e["response"]["location"] for e in first["entry"]
    ]
    stats = fhir.stats()
    assert stats["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}
    assert stats["requests"]["POST /"] == 2


def test_concurrent_copies_of_a_transaction_create_one_set(fhir):
    bundle = transaction()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: post(fhir, "/", bundle).status_code, range(8)))
    assert statuses == [200] * 8
    assert fhir.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


def test_another_response_is_written_beside_the_first(fhir):
    post(fhir, "/", transaction())
    response = post(fhir, "/", transaction(response_id="r-2"))
    assert response.status_code == 200, response.text
    assert fhir.stats()["resources"] == {"QuestionnaireResponse": 2, "Observation": 8}


def test_conditional_create_by_header_finds_the_first_copy(fhir):
    obs = observation()
    ident = obs["identifier"][0]
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}
    created = post(fhir, "/Observation", obs, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(f"{fhir.base_url}/Observation/")
    again = post(fhir, "/Observation", obs, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    assert fhir.stats()["resources"] == {"Observation": 1}


def test_identifier_searches_match_as_medplum_does(fhir):
    """The server answers identifier searches from an index; it must agree with a full scan."""
    system = CONTEXT["identifier_system"]

    def ids(identifier: str) -> list[str]:
        return sorted(
            obs["identifier"][0]["value"] for obs in search(fhir, "Observation", identifier)
        )

    first, second = observation(), observation()
    first["identifier"][0]["value"] = "Abc-1"
    second["identifier"][0]["value"] = "abc-2"
    for obs in (first, second):
        assert post(fhir, "/Observation", obs).status_code == 201
    assert ids(f"{system}|abc-1") == ["Abc-1"]  # tokens match case-insensitively
    assert ids("ABC-1") == ["Abc-1"]  # no system: any system
    assert ids("|Abc-1") == []  # empty system: only identifiers without one
    assert ids("https://other.example|Abc-1") == []
    assert ids(f"{system}|") == ["Abc-1", "abc-2"]  # the system alone
    assert ids(f"{system}|abc-1,{system}|abc-2,{system}|abc-3") == ["Abc-1", "abc-2"]

    (stored,) = search(fhir, "Observation", f"{system}|Abc-1")
    stored["identifier"][0]["value"] = "xyz"
    put = requests.put(
        f"{fhir.base_url}/Observation/{stored['id']}", json=stored, headers=FHIR_JSON, timeout=10
    )
    assert put.status_code == 200, put.text
    assert ids(f"{system}|Abc-1") == []
    assert ids(f"{system}|xyz") == ["xyz"]
    (other,) = search(fhir, "Observation", f"{system}|abc-2")
    deleted = requests.delete(f"{fhir.base_url}/Observation/{other['id']}", timeout=10)
    assert deleted.status_code == 200, deleted.text
    assert ids(f"{system}|abc-2") == []
    assert ids(f"{system}|") == ["xyz"]


# -- strictness -------------------------------------------------------------------------------


def test_an_invalid_status_code_is_rejected(fhir):
    response = post(fhir, "/Observation", observation(status="done"))
    assert response.status_code == 400
    assert issues(response) == [
        'Observation.status: Code "done" is not in the required value set ObservationStatus '
        "(http://hl7.org/fhir/ValueSet/observation-status)"
    ]
    assert fhir.stats()["resources"] == {}


def test_an_invalid_code_anywhere_rejects_the_whole_transaction(fhir):
    bundle = transaction()
    bundle["entry"][3]["resource"]["status"] = "done"
    response = post(fhir, "/", bundle)
    assert response.status_code == 400
    assert any(i.startswith("Bundle.entry[3].resource.status:") for i in issues(response))
    assert fhir.stats()["resources"] == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "transactionx"), ("entry.request.method", "FETCH")],
)
def test_bundle_codes_are_checked(fhir, field, value):
    bundle = transaction()
    if field == "type":
        bundle["type"] = value
    else:
        bundle["entry"][0]["request"]["method"] = value
    response = post(fhir, "/", bundle)
    assert response.status_code == 400
    assert value in " ".join(issues(response))
    assert fhir.stats()["resources"] == {}


def test_a_reference_to_the_wrong_resource_type_is_rejected(fhir):
    response = post(fhir, "/Observation", observation(derivedFrom=[{"reference": "Patient/c1"}]))
    assert response.status_code == 400
    (problem,) = issues(response)
    assert problem.startswith('Observation.derivedFrom[0]: Invalid reference: got "Patient"')


def test_a_placeholder_pointing_at_the_wrong_entry_type_is_rejected(fhir):
    bundle = transaction()
    # The subject of a score must be a Patient, not the QuestionnaireResponse entry.
    bundle["entry"][1]["resource"]["subject"] = {"reference": bundle["entry"][0]["fullUrl"]}
    response = post(fhir, "/", bundle)
    assert response.status_code == 400
    (problem,) = issues(response)
    assert problem.startswith(
        'Bundle.entry[1].resource.subject: Invalid reference: got "QuestionnaireResponse"'
    )
    assert fhir.stats()["resources"] == {}


def test_a_placeholder_matching_no_entry_is_rejected(fhir):
    bundle = transaction()
    bundle["entry"][1]["resource"]["derivedFrom"] = [{"reference": f"urn:uuid:{uuid.uuid4()}"}]
    response = post(fhir, "/", bundle)
    assert response.status_code == 400
    assert fhir.stats()["resources"] == {}


def test_a_misspelt_search_parameter_is_refused_not_matched_against_nothing(fhir):
    bundle = transaction()
    bundle["entry"][2]["request"]["ifNoneExist"] = bundle["entry"][2]["request"][
        "ifNoneExist"
    ].replace("identifier=", "identifer=")
    response = post(fhir, "/", bundle)
    assert response.status_code == 400
    assert issues(response) == [
        'Bundle.entry[2].request.ifNoneExist: Unknown search parameter "identifer" for Observation'
    ]
    assert get(fhir, "/Observation", params={"identifer": "x"}).status_code == 400
    assert fhir.stats()["resources"] == {}


def test_batch_entries_fail_one_by_one(fhir):
    good, bad = observation(), observation(status="done")
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Observation"}},
            {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = post(fhir, "/", bundle)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201", "400"]
    assert fhir.stats()["resources"] == {"Observation": 1}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"valueString": "7"}, "Conflicting choice of type", id="two value[x]"),
        pytest.param({"effectiveDateTime": "2025-02-30"}, "Invalid dateTime", id="bad date"),
        pytest.param({"colour": "red"}, 'Invalid additional property "colour"', id="unknown"),
        pytest.param({"code": None}, "Missing required property", id="missing code"),
        pytest.param(
            {"subject": {"reference": "Patient/"}}, "not a valid literal reference", id="bad ref"
        ),
        pytest.param(
            {"valueQuantity": {"value": "7"}}, "expected number, but got string", id="json type"
        ),
        pytest.param(
            {"valueQuantity": {"value": 7, "comparator": "about"}},
            "QuantityComparator",
            id="bound code in a datatype",
        ),
    ],
)
def test_other_invalid_observations_are_rejected(fhir, change, expected):
    obs = observation()
    for key, value in change.items():
        if value is None:
            del obs[key]
        else:
            obs[key] = value
    response = post(fhir, "/Observation", obs)
    assert response.status_code == 400
    assert expected in " ".join(issues(response))


def test_valid_variations_are_accepted(fhir):
    # Absolute references are literal references too, and category is only a preferred
    # binding in R4, so another code there is not an error.
    obs = observation(
        subject={"reference": "https://ehr.example/fhir/Patient/c1"},
        category=[{"coding": [{"system": "https://example.org/cat", "code": "mood"}]}],
    )
    response = post(fhir, "/Observation", obs)
    assert response.status_code == 201, response.text


def test_only_fhir_json_is_accepted(fhir):
    body = json.dumps(observation())
    plain = requests.post(
        f"{fhir.base_url}/Observation",
        data=body,
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert plain.status_code == 415
    broken = requests.post(
        f"{fhir.base_url}/Observation", data=body[:-1], headers=FHIR_JSON, timeout=10
    )
    assert broken.status_code == 400
    assert issues(broken) == [": Body is not valid JSON"]


def test_unknown_types_and_ids_are_not_found(fhir):
    assert get(fhir, "/Observation/nope").status_code == 404
    assert get(fhir, "/MedicationRequest").status_code == 404


# -- metadata -------------------------------------------------------------------------------


def _rest(server) -> dict:
    response = get(server, "/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    return statement["rest"][0]


def _interactions(rest: dict, resource_type: str) -> set[str]:
    (resource,) = [r for r in rest["resource"] if r["type"] == resource_type]
    return {i["code"] for i in resource["interaction"]}


def test_metadata_advertises_transactions_and_response_create(ehr):
    rest = _rest(ehr)
    assert "transaction" in {i["code"] for i in rest["interaction"]}
    assert {"create", "read", "search-type"} <= _interactions(rest, "QuestionnaireResponse")
    assert "create" in _interactions(rest, "Observation")
    (oauth,) = rest["security"]["extension"]
    assert {"url": "token", "valueUri": TOKEN_ENDPOINT} in oauth["extension"]


def test_smart_configuration(ehr):
    response = get(ehr, "/.well-known/smart-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == TOKEN_ENDPOINT
    assert config["grant_types_supported"] == ["client_credentials"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "permission-v2" in config["capabilities"]
    assert "permission-v1" not in config["capabilities"]
    assert {"system/QuestionnaireResponse.c", "system/Observation.c"} <= set(
        config["scopes_supported"]
    )


@pytest.fixture(scope="module")
def limited_ehr():
    """An EHR like the ones DESIGN.md warns about, under a base path like real EHRs."""
    with fhir_server.running(
        "--no-transaction", "--no-qr-create", "--smart-v1", "--base-path", "/fhir/r4"
    ) as server:
        yield server


def test_limited_metadata_lacks_transaction_and_response_create(limited_ehr):
    assert limited_ehr.base_url.endswith("/fhir/r4")
    rest = _rest(limited_ehr)
    assert "transaction" not in {i["code"] for i in rest["interaction"]}
    assert "create" not in _interactions(rest, "QuestionnaireResponse")
    assert "create" in _interactions(rest, "Observation")
    config = get(limited_ehr, "/.well-known/smart-configuration").json()
    assert "permission-v1" in config["capabilities"]
    assert "permission-v2" not in config["capabilities"]
    assert "system/Observation.write" in config["scopes_supported"]
    assert "system/QuestionnaireResponse.write" not in config["scopes_supported"]


def test_limited_server_refuses_what_it_does_not_advertise(limited_ehr):
    limited_ehr.reset()
    refused = post(limited_ehr, "/", transaction())
    assert refused.status_code == 405
    assert issues(refused) == [": transaction is not supported by this server"]
    qr = transaction()["entry"][0]["resource"]
    assert post(limited_ehr, "/QuestionnaireResponse", qr).status_code == 405
    # The fallback still works: score Observations as individual conditional creates.
    obs = observation()
    ident = obs["identifier"][0]
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}
    assert post(limited_ehr, "/Observation", obs, headers=headers).status_code == 201
    assert limited_ehr.stats()["resources"] == {"Observation": 1}
    outside = requests.get(f"{limited_ehr.origin}/metadata", timeout=10)
    assert outside.status_code == 404


@pytest.fixture(scope="module")
def strict_ehr():
    """A server that also insists references resolve, and refuses to create Flags."""
    with fhir_server.running("--check-references", "--no-create", "Flag") as server:
        yield server


def test_references_must_resolve_and_a_failed_transaction_leaves_nothing(strict_ehr):
    strict_ehr.reset()
    refused = post(strict_ehr, "/", transaction())
    assert refused.status_code == 400
    assert any('"Patient/c1" does not resolve' in i for i in issues(refused))
    # The response was created before the check failed; the transaction rolled it back.
    assert strict_ehr.stats()["resources"] == {}

    for path, resource in [
        ("/Patient/c1", {"resourceType": "Patient", "id": "c1"}),
        (
            "/Encounter/e1",
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "VR",
                },
            },
        ),
    ]:
        put = requests.put(
            f"{strict_ehr.base_url}{path}", json=resource, headers=FHIR_JSON, timeout=10
        )
        assert put.status_code in (200, 201), put.text
    accepted = post(strict_ehr, "/", transaction())
    assert accepted.status_code == 200, accepted.text
    assert strict_ehr.stats()["resources"] == {
        "Patient": 1,
        "Encounter": 1,
        "QuestionnaireResponse": 1,
        "Observation": 4,
    }


def test_a_transaction_with_an_entry_the_server_cannot_create_rolls_back(strict_ehr):
    strict_ehr.reset()
    requests.put(
        f"{strict_ehr.base_url}/Patient/c1",
        json={"resourceType": "Patient", "id": "c1"},
        headers=FHIR_JSON,
        timeout=10,
    )
    bundle = transaction(encounter=None)
    bundle["entry"].append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Flag",
                "status": "active",
                "code": {"text": "Alliance dropped"},
                "subject": {"reference": "Patient/c1"},
            },
            "request": {"method": "POST", "url": "Flag"},
        }
    )
    response = post(strict_ehr, "/", bundle)
    assert response.status_code == 405
    assert strict_ehr.stats()["resources"] == {"Patient": 1}


def test_a_failed_transaction_restores_what_it_updated_and_deleted(strict_ehr):
    strict_ehr.reset()

    def put(path: str, resource: dict) -> None:
        response = requests.put(
            f"{strict_ehr.base_url}{path}", json=resource, headers=FHIR_JSON, timeout=10
        )
        assert response.status_code in (200, 201), response.text

    put("/Patient/p2", {"resourceType": "Patient", "id": "p2", "gender": "female"})
    put("/Practitioner/old", {"resourceType": "Practitioner", "id": "old"})
    before = get(strict_ehr, "/Patient/p2").json()

    bundle = transaction(encounter=None)  # Patient/c1 does not exist: fails after every write
    bundle["entry"] += [
        {
            "resource": {"resourceType": "Patient", "id": "p2", "gender": "male"},
            "request": {"method": "PUT", "url": "Patient/p2"},
        },
        {"request": {"method": "DELETE", "url": "Practitioner/old"}},
    ]
    refused = post(strict_ehr, "/", bundle)
    assert refused.status_code == 400
    assert any('"Patient/c1" does not resolve' in i for i in issues(refused))
    assert get(strict_ehr, "/Patient/p2").json() == before
    history = get(strict_ehr, "/Patient/p2/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == [
        before["meta"]["versionId"]
    ]
    assert get(strict_ehr, "/Practitioner/old").status_code == 200
    assert strict_ehr.stats()["resources"] == {"Patient": 1, "Practitioner": 1}

    # What the failed transaction created is gone, so its conditional creates create again.
    put("/Patient/c1", {"resourceType": "Patient", "id": "c1"})
    bundle = transaction(encounter=None)
    accepted = post(strict_ehr, "/", bundle)
    assert accepted.status_code == 200, accepted.text
    assert [e["response"]["status"] for e in accepted.json()["entry"]] == ["201"] * 5
    for entry in bundle["entry"][1:]:
        ident = entry["request"]["ifNoneExist"].removeprefix("identifier=")
        assert len(search(strict_ehr, "Observation", ident)) == 1


# -- outages --------------------------------------------------------------------------------


def test_injected_outage_then_recovery(fhir):
    fhir.fail_next(2, status=503, retry_after=2)
    for _ in range(2):
        failed = post(fhir, "/", transaction())
        assert failed.status_code == 503
        assert failed.headers["Retry-After"] == "2"
        assert issues(failed) == [": Injected failure (test control)"]
    assert fhir.stats()["resources"] == {}
    assert post(fhir, "/", transaction()).status_code == 200
    stats = fhir.stats()
    assert stats["requests"] == {"POST /": 3}  # control calls are not counted
    assert stats["responses"] == {"POST / 503": 2, "POST / 200": 1}
    assert stats["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


def test_an_outage_can_target_one_method_and_path(fhir):
    fhir.fail_next(1, status=429, method="POST", path="/")
    assert get(fhir, "/metadata").status_code == 200
    throttled = post(fhir, "/", transaction())
    assert throttled.status_code == 429
    assert "Retry-After" not in throttled.headers
    assert post(fhir, "/", transaction()).status_code == 200
    assert post(fhir, "/", transaction()).status_code == 200
    assert fhir.stats()["pendingFailures"] == 0
    assert fhir.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


def test_a_server_gone_down_refuses_connections_then_comes_back_with_its_data(fhir):
    assert post(fhir, "/", transaction()).status_code == 200
    fhir.go_down(1.5)
    time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        get(fhir, "/metadata")
    time.sleep(1.8)
    assert get(fhir, "/metadata").status_code == 200
    assert fhir.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


def test_resources_repeating_an_identifier_are_counted_as_duplicates(fhir):
    assert post(fhir, "/", transaction()).status_code == 200
    assert post(fhir, "/", transaction()).status_code == 200  # conditional: nothing new
    assert fhir.stats()["duplicates"] == {}
    again = observation()
    for _ in range(3):  # a plain create, not conditional, three times
        assert post(fhir, "/Observation", again).status_code == 201
    assert fhir.stats()["duplicates"] == {"Observation": 2}


# -- bearer tokens --------------------------------------------------------------------------

ISSUER = "https://auth.ehr.example"
WRITE_SCOPES = "system/QuestionnaireResponse.c system/Observation.c"


class JwksHost:
    """A real web server publishing a JWKS, like an authorization server's jwks_uri."""

    def __init__(self, key_set: KeySet):
        self.key_set = key_set
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(host.key_set.as_dict(private=False)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def signing_key():
    return ECKey.generate_key("P-256", parameters={"kid": "as-1"})


@pytest.fixture(scope="module")
def secured_ehr(signing_key):
    """A server that wants a Bearer JWT from the authorization server, with SMART scopes."""
    host = JwksHost(KeySet([signing_key]))
    try:
        with fhir_server.running(
            "--require-bearer",
            "--issuer-jwks",
            host.url,
            "--token-issuer",
            ISSUER,
            "--enforce-scopes",
        ) as server:
            yield server
    finally:
        host.stop()


def token(key, scope=WRITE_SCOPES, issuer=ISSUER, lifetime=300) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "alliance-check",
        "scope": scope,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)


def bearer(value: str) -> dict:
    return {**FHIR_JSON, "Authorization": f"Bearer {value}"}


def test_discovery_needs_no_token(secured_ehr):
    assert get(secured_ehr, "/metadata").status_code == 200
    assert get(secured_ehr, "/.well-known/smart-configuration").status_code == 200


def test_a_valid_token_with_write_scopes_may_post_the_transaction(secured_ehr, signing_key):
    secured_ehr.reset()
    response = post(secured_ehr, "/", transaction(), headers=bearer(token(signing_key)))
    assert response.status_code == 200, response.text
    assert secured_ehr.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


def test_no_token_is_unauthorized_without_an_error_code(secured_ehr):
    response = post(secured_ehr, "/", transaction())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda key: "not-a-jwt", id="garbage"),
        pytest.param(
            lambda key: token(ECKey.generate_key("P-256", parameters={"kid": key.kid})),
            id="signed by another key",
        ),
        pytest.param(lambda key: token(key, lifetime=-60), id="expired"),
        pytest.param(lambda key: token(key, issuer="https://evil.example"), id="wrong issuer"),
    ],
)
def test_bad_tokens_are_invalid_token(secured_ehr, signing_key, make):
    response = post(secured_ehr, "/", transaction(), headers=bearer(make(signing_key)))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="fhir", error="invalid_token"'
    )
    assert issues(response)


def test_scopes_must_cover_every_entry(secured_ehr, signing_key):
    secured_ehr.reset()
    only_observations = token(signing_key, scope="system/Observation.c")
    response = post(secured_ehr, "/", transaction(), headers=bearer(only_observations))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert "system/QuestionnaireResponse.c" in response.headers["WWW-Authenticate"]
    # Writing does not grant reading; SMART v1 "write" and wildcards are understood.
    searching = get(secured_ehr, "/Observation", headers=bearer(token(signing_key)))
    assert searching.status_code == 403
    v1 = token(signing_key, scope="system/*.write")
    assert post(secured_ehr, "/", transaction(), headers=bearer(v1)).status_code == 200


def test_expired_tokens_force_a_refresh(secured_ehr, signing_key):
    secured_ehr.reset()
    old = token(signing_key)
    assert post(secured_ehr, "/", transaction(), headers=bearer(old)).status_code == 200
    secured_ehr.expire_tokens()
    refused = post(secured_ehr, "/", transaction(), headers=bearer(old))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    fresh = token(signing_key)
    assert post(secured_ehr, "/", transaction(), headers=bearer(fresh)).status_code == 200
    assert secured_ehr.stats()["resources"] == {"QuestionnaireResponse": 1, "Observation": 4}


# -- the helper -----------------------------------------------------------------------------


def test_a_server_that_cannot_start_says_why():
    with pytest.raises(fhir_server.FhirServerError, match="unknown flag --bogus"):
        fhir_server.start(0, "--bogus")
