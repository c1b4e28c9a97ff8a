"""SMART Backend Services: discover a FHIR server, then get tokens with a private_key_jwt."""

import threading
import time
from dataclasses import dataclass

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

from plugin.ehr.errors import SmartError
from plugin.ehr.keys import Signer

TIMEOUT = (5, 30)
# SMART caps an assertion's life at five minutes.
ASSERTION_LIFETIME = 300
# Renew a cached token this long before it expires, so no write starts with a dying token.
TOKEN_MARGIN = 60


@dataclass(frozen=True)
class ServerFacts:
    """What a FHIR server says it can do, reduced to what decides how we write."""

    token_endpoint: str
    smart_v2: bool
    transaction: bool
    questionnaire_response_create: bool
    observation_create: bool
    document_reference_create: bool
    # Whether Patient search is offered, to find a client the platform did not name (Zoom).
    # Connections checked before this fact existed lack it and are tried as if it were true.
    patient_search: bool = True
    # Whether Flags can be created and updated (the rupture rule's Flag and its repair), and
    # Observations searched (the rule reads earlier scores back). Both are optional: without
    # them responses are written, unflagged. `ehr connect` sets them from what was granted.
    flag_write: bool = False
    observation_search: bool = False
    # Which of Appointment and Practitioner the server can search: finding a Zoom session's
    # client in the schedule needs both (optional; `ehr connect` sets appointment_search).
    schedule_search: tuple[str, ...] = ()
    # Whether Consents can be searched, for the client's consent to texts (optional; `ehr
    # connect` sets consent_search from what was granted).
    consent_offered: bool = False

    def scope(self) -> str:
        """Return the system scopes our writes need, in the server's SMART dialect."""
        types = ["QuestionnaireResponse", "Observation"]
        if not self.questionnaire_response_create:
            types = ["Observation", "DocumentReference"]
        suffix = ".c" if self.smart_v2 else ".write"
        return " ".join(f"system/{t}{suffix}" for t in types)


def search_scope(resource_type: str, smart_v2: bool) -> str:
    """Return the read scope a search of one resource type needs, in the server's dialect.

    Searches get tokens of their own, asked for only when needed: the write token keeps its
    create-only scopes, and an EHR that refuses reads still takes writes.
    """
    return f"system/{resource_type}.rs" if smart_v2 else f"system/{resource_type}.read"


def flag_scope(smart_v2: bool) -> str:
    """Return the scope creating and updating Flags needs, in the server's SMART dialect."""
    return "system/Flag.cu" if smart_v2 else "system/Flag.write"


def patient_search_scope(smart_v2: bool) -> str:
    """Return the read scope a Patient search needs (to find a client a platform did not name)."""
    return search_scope("Patient", smart_v2)


def _get_json(http: requests.Session, url: str) -> dict:
    try:
        response = http.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise SmartError(f"could not reach {url} ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise SmartError(f"{url} answered {response.status_code}", response)
    try:
        return response.json()
    except ValueError as exc:
        raise SmartError(f"{url} did not answer JSON", response) from exc


def _offering(capability: dict, interaction: str) -> set[str]:
    return {
        resource["type"]
        for rest in capability.get("rest", [])
        if rest.get("mode") == "server"
        for resource in rest.get("resource", [])
        if any(i.get("code") == interaction for i in resource.get("interaction", []))
    }


def discover(http: requests.Session, fhir_base: str) -> ServerFacts:
    """Read .well-known/smart-configuration and the CapabilityStatement."""
    base = fhir_base.rstrip("/")
    smart = _get_json(http, f"{base}/.well-known/smart-configuration")
    if not smart.get("token_endpoint"):
        raise SmartError("smart-configuration has no token_endpoint")
    if "private_key_jwt" not in smart.get("token_endpoint_auth_methods_supported", []):
        raise SmartError("the server does not accept private_key_jwt client authentication")
    capability = _get_json(http, f"{base}/metadata")
    if capability.get("resourceType") != "CapabilityStatement":
        raise SmartError("metadata is not a CapabilityStatement")
    creatable = _offering(capability, "create")
    system_interactions = {
        i.get("code") for rest in capability.get("rest", []) for i in rest.get("interaction", [])
    }
    capabilities = set(smart.get("capabilities", []))
    return ServerFacts(
        token_endpoint=smart["token_endpoint"],
        # A server that names neither version is treated as v2, the current one.
        smart_v2="permission-v2" in capabilities or "permission-v1" not in capabilities,
        transaction="transaction" in system_interactions,
        questionnaire_response_create="QuestionnaireResponse" in creatable,
        observation_create="Observation" in creatable,
        document_reference_create="DocumentReference" in creatable,
        patient_search="Patient" in _offering(capability, "search-type"),
        flag_write="Flag" in creatable & _offering(capability, "update"),
        observation_search="Observation" in _offering(capability, "search-type"),
        schedule_search=tuple(
            sorted({"Appointment", "Practitioner"} & _offering(capability, "search-type"))
        ),
        consent_offered="Consent" in _offering(capability, "search-type"),
    )


class SmartAssertion(PrivateKeyJWT):
    """private_key_jwt the SMART way: RS384/ES384, a kid, exp <= 5 min, a fresh jti each time."""

    def __init__(self, signer: Signer):
        super().__init__(alg=signer.alg)
        self.signer = signer

    def sign(self, auth, token_endpoint: str) -> str:
        """Sign a new assertion; no claims are passed, so authlib draws a new jti every call."""
        return private_key_jwt_sign(
            self.signer.key,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.signer.alg,
            header={"kid": self.signer.kid, "typ": "JWT"},
            expires_in=ASSERTION_LIFETIME,
        )


def fetch_token(client_id: str, token_endpoint: str, scope: str, signer: Signer) -> dict:
    """Run the client_credentials grant and return the token response."""
    method = "private_key_jwt"
    session = OAuth2Session(client_id, signer.key, scope=scope, token_endpoint_auth_method=method)
    session.register_client_auth_method(SmartAssertion(signer))
    return request_token(session, token_endpoint, grant_type="client_credentials")


def request_token(session: OAuth2Session, token_endpoint: str, **params) -> dict:
    """Ask the token endpoint through this authlib session, turning failures into SmartError."""
    try:
        return session.fetch_token(token_endpoint, timeout=TIMEOUT, **params)
    except requests.RequestException as exc:
        raise SmartError(f"token endpoint unreachable ({type(exc).__name__})") from exc
    except Exception as exc:
        # authlib raises OAuthError subclasses carrying the server's error code.
        code = getattr(exc, "error", type(exc).__name__)
        raise SmartError(f"token request refused: {code}") from exc
    finally:
        session.close()


class TokenCache:
    """Keep one access token per practice until shortly before it expires. Thread-safe."""

    def __init__(self, clock=time.monotonic):
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: str, fetch) -> str:
        """Return a live token for key, calling fetch() for a new one when needed."""
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > self._clock():
                return cached[0]
        token = fetch()
        lifetime = float(token.get("expires_in", 300))
        with self._lock:
            self._tokens[key] = (
                token["access_token"],
                self._clock() + max(lifetime - TOKEN_MARGIN, lifetime / 2),
            )
        return token["access_token"]

    def forget(self, key: str) -> None:
        """Drop key's token, e.g. after the FHIR server answered 401."""
        with self._lock:
            self._tokens.pop(key, None)


@dataclass(frozen=True)
class LaunchEndpoints:
    """Where an EHR's SMART App Launch happens: its authorization and token endpoints."""

    authorization_endpoint: str
    token_endpoint: str


def discover_launch(http: requests.Session, fhir_base: str) -> LaunchEndpoints:
    """Read the EHR launch endpoints from {fhir_base}/.well-known/smart-configuration."""
    smart = _get_json(http, f"{fhir_base.rstrip('/')}/.well-known/smart-configuration")
    authorize, token = smart.get("authorization_endpoint"), smart.get("token_endpoint")
    if not (isinstance(authorize, str) and authorize and isinstance(token, str) and token):
        raise SmartError("smart-configuration offers no app launch (authorization_endpoint)")
    # SMART App Launch 2 requires PKCE with S256; a server without it cannot be trusted with
    # a public client's code.
    if "S256" not in smart.get("code_challenge_methods_supported", []):
        raise SmartError("smart-configuration does not offer PKCE S256")
    return LaunchEndpoints(authorize, token)
