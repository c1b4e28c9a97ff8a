"""SMART App Launch (EHR launch) as a public client: the authorization URL and the code exchange.

authlib builds both: PKCE S256, `state`, `aud` (the FHIR base) and the EHR's `launch`. The
token response's `patient` and `encounter` are the launch context; the caller keeps the
token sealed on the server and never hands it to the browser.
"""

from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from plugin.ehr.smart import request_token

# What the therapist's view reads, and only for the patient the EHR has open.
LAUNCH_SCOPE = (
    "launch openid fhirUser patient/Observation.rs patient/QuestionnaireResponse.rs patient/Flag.rs"
)


def new_verifier() -> str:
    """Return a PKCE code verifier: 64 characters from the unreserved set (RFC 7636)."""
    return generate_token(64)


def authorization_url(
    client_id: str,
    authorization_endpoint: str,
    redirect_uri: str,
    *,
    state: str,
    verifier: str,
    iss: str,
    launch: str,
) -> str:
    """Return the EHR authorization URL for this launch."""
    session = OAuth2Session(
        client_id, scope=LAUNCH_SCOPE, redirect_uri=redirect_uri, code_challenge_method="S256"
    )
    try:
        url, _ = session.create_authorization_url(
            authorization_endpoint, state=state, code_verifier=verifier, aud=iss, launch=launch
        )
    finally:
        session.close()
    return url


def exchange_code(
    client_id: str,
    token_endpoint: str,
    redirect_uri: str,
    code: str,
    verifier: str,
) -> dict:
    """Exchange the authorization code (with its PKCE verifier) for the token response."""
    session = OAuth2Session(
        client_id,
        redirect_uri=redirect_uri,
        # A public client: PKCE, not a secret, proves the code is ours.
        token_endpoint_auth_method="none",  # noqa: S106 (a method name, not a password)
        code_challenge_method="S256",
    )
    return request_token(
        session,
        token_endpoint,
        grant_type="authorization_code",
        code=code,
        code_verifier=verifier,
    )
