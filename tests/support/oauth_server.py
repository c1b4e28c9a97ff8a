"""A real OAuth 2.0 authorization server for tests: the token endpoint of SMART Backend Services.

It stands in for an EHR's authorization server. It is built on authlib's Flask
``AuthorizationServer`` with the ``client_credentials`` grant and RFC 7523
``private_key_jwt`` client authentication, and it is strict the way SMART asks
an EHR to be. A client assertion is accepted only when:

- its header has ``alg`` RS384 or ES384 (RS256, HS256, ``none`` are refused),
  a ``kid``, ``typ`` ``JWT``, and no ``jku`` other than the registered JWKS URL;
- its signature verifies with the key of that ``kid`` in the client's JWKS, fetched
  from the client's JWKS URL on every request (or registered inline);
- ``iss == sub ==`` a registered ``client_id`` and ``aud`` names this token endpoint;
- ``exp`` is present, not past, at most five minutes ahead, and at most five
  minutes after ``iat`` when ``iat`` is given;
- its ``jti`` was never seen before for that client.

A failed client authentication answers ``invalid_client`` with 401 (configurable);
other errors are RFC 6749 JSON (``invalid_scope``, ``unsupported_grant_type``...).
Scopes: SMART v1 (``system/Observation.write``) and v2 (``system/Observation.c``),
where a registered scope covers a requested one of the same context whose resource
matches (or is ``*``) and whose permissions are a subset (v1 ``read`` = ``rs``,
``write`` = ``cud``, ``*`` = ``cruds``). With ``scope_policy="narrow"`` (default) the
token carries the requested scopes the client may have, and ``invalid_scope`` only
comes when none is allowed; with ``"reject"`` any disallowed scope is ``invalid_scope``.

The access token is a JWT signed ES256 by the server's own key, published at
``/jwks.json`` so a FHIR test server can verify bearer tokens. Its claims are
``iss`` (the server URL), ``sub`` and ``client_id`` (the client), ``scope``,
``iat``, ``exp``, ``jti``, and ``aud`` when an audience is configured.

SMART App Launch (EHR launch) runs too: ``register_launch_client()`` registers a public
client (PKCE S256 only, exact redirect URIs), ``register_launch()`` a launch context (the
``launch`` value the EHR passes, its patient and encounter, and the FHIR base the ``aud``
must name). ``GET /authorize`` consents at once (``deny_next()`` makes the next one answer
``access_denied``); the code exchange answers ``patient``, ``encounter`` and the granted
``scope``, and the access token carries a ``patient`` claim a FHIR server can enforce
``patient/*`` scopes with. No ``id_token`` is issued: ``openid fhirUser`` are granted as
asked, not honoured.

Other endpoints: ``/.well-known/smart-configuration`` (the document a FHIR server
publishes; also ``OAuthServer.smart_configuration()``) and ``/introspect``
(RFC 7662, unauthenticated: test-only).

Use ``start_oauth_server()`` or the ``oauth_server`` fixture (session scope; call
``reset()`` for a clean slate). Everything runs on 127.0.0.1 in a daemon thread.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, g, jsonify, request
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from tests.support.wsgi_thread import ThreadedServer

#: The only assertion algorithms SMART Backend Services allows.
ASSERTION_ALGORITHMS = ("RS384", "ES384")
#: SMART: an assertion's exp is "no more than five minutes in the future".
MAX_ASSERTION_LIFETIME = 300
#: Clock skew tolerated on exp/iat/nbf (client and server share a clock in tests).
LEEWAY = 5
TOKEN_ALGORITHM = "ES256"
AUTH_METHOD = "private_key_jwt"

_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")


def _clean(text: str) -> str:
    """Make text safe for an OAuth error_description (no quote or backslash)."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in str(text))


def parse_scope(scope: str) -> tuple[str, str, frozenset[str], str | None, str] | None:
    """Split a SMART scope into (context, resource, permissions, query, dialect), or None."""
    match = _SCOPE.match(scope)
    if not match:
        return None
    context, resource, permissions, query = match.groups()
    if permissions in _V1_PERMISSIONS:
        return context, resource, frozenset(_V1_PERMISSIONS[permissions]), query, "v1"
    in_order = "".join(c for c in "cruds" if c in permissions)
    if permissions and in_order == permissions:
        return context, resource, frozenset(permissions), query, "v2"
    return None


def scope_covers(allowed: str, requested: str) -> bool:
    """Return whether a registered scope grants a requested one."""
    if allowed == requested:
        return True
    a, r = parse_scope(allowed), parse_scope(requested)
    if a is None or r is None:
        return False
    return a[0] == r[0] and a[1] in ("*", r[1]) and r[2] <= a[2] and (a[3] is None or a[3] == r[3])


class Client(ClientMixin):
    """A registered backend-services client: its id, its public keys and its allowed scopes."""

    def __init__(
        self,
        client_id: str,
        scopes: Iterable[str],
        jwks_url: str | None = None,
        jwks: dict | KeySet | None = None,
    ):
        if (jwks_url is None) == (jwks is None):
            raise ValueError("register a client with exactly one of jwks_url or jwks")
        self.client_id = client_id
        self.scopes = tuple(scopes.split() if isinstance(scopes, str) else scopes)
        self.jwks_url = jwks_url
        self.jwks = jwks

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return " ".join(self.scopes)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == AUTH_METHOD and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def allows(self, scope: str) -> bool:
        return any(scope_covers(allowed, scope) for allowed in self.scopes)

    def public_keys(self) -> KeySet:
        """Return the client's JWKS: inline, or fetched from its URL now."""
        if self.jwks is not None:
            if isinstance(self.jwks, KeySet):
                return self.jwks
            return KeySet.import_key_set(self.jwks)
        try:
            response = requests.get(self.jwks_url, timeout=5)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (requests.RequestException, ValueError, KeyError, TypeError, JoseError) as exc:
            raise InvalidClientError(
                description=f"Could not get the client's JWKS ({type(exc).__name__})"
            ) from exc


@dataclass(frozen=True)
class LaunchContext:
    """What the EHR knows at a launch: the open patient, the encounter, its FHIR base."""

    patient: str
    encounter: str | None
    aud: str


class LaunchClient(ClientMixin):
    """A SMART App Launch public client: PKCE instead of a secret, exact redirect URIs."""

    def __init__(self, client_id: str, redirect_uris: Iterable[str], scopes: Iterable[str]):
        self.client_id = client_id
        self.redirect_uris = tuple(redirect_uris)
        self.scopes = tuple(scopes.split() if isinstance(scopes, str) else scopes)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in dict.fromkeys((scope or "").split()) if self.allows(s))

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def allows(self, scope: str) -> bool:
        return any(scope_covers(allowed, scope) for allowed in self.scopes)


@dataclass(frozen=True)
class AuthorizationCode:
    """One issued code: bound to its client, redirect URI, PKCE challenge and launch context."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    context: LaunchContext
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class S256Only(CodeChallenge):
    """PKCE as SMART App Launch 2 asks: required, S256 only (``plain`` is refused)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's class attribute)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        if not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'", redirect_uri=redirect_uri)
        return super().validate_code_challenge(grant, redirect_uri)


class SmartAuthorizationCodeGrant(AuthorizationCodeGrant):
    """authorization_code for an EHR launch: a registered ``launch`` and ``aud`` are required."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 (authlib's class attribute)

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        data = self.request.payload.data
        context = self.server.oauth.launches.get(data.get("launch", ""))
        if context is None:
            raise InvalidRequestError("Unknown 'launch'", redirect_uri=redirect_uri)
        if data.get("aud") != context.aud:
            raise InvalidRequestError(
                "'aud' is not this EHR's FHIR base", redirect_uri=redirect_uri
            )
        self.request.launch_context = context
        return redirect_uri

    def save_authorization_code(self, code: str, request) -> None:
        data = request.payload.data
        self.server.oauth.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            context=request.user,
            expires_at=time.time() + 60,
        )

    def query_authorization_code(self, code: str, client) -> AuthorizationCode | None:
        found = self.server.oauth.codes.get(code)
        if found and found.client_id == client.client_id and found.expires_at > time.time():
            return found
        return None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.oauth.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> LaunchContext:
        return authorization_code.context


class SmartClientAssertion(JWTBearerClientAssertion):
    """authlib's RFC 7523 client authentication with the checks SMART adds.

    authlib 1.9 on its own decodes with joserfc's default algorithms (HS256, RS256,
    ES256), which refuses SMART's RS384/ES384 and admits RS256; it does not cap
    ``exp`` nor need a ``kid``. Those checks are here.
    """

    CLIENT_AUTH_METHOD = AUTH_METHOD

    def __init__(self, server: OAuthServer):
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self.server = server

    def __call__(self, query_client, oauth_request):
        try:
            return super().__call__(query_client, oauth_request)
        except InvalidClientError:
            raise
        except JoseError as exc:
            raise InvalidClientError(description=_clean(exc.description or exc.error)) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidClientError(description=_clean(f"Invalid assertion: {exc}")) from exc

    def get_audiences(self) -> list[str]:
        return [self.server.token_endpoint]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        g.assertion_client = client  # for process_assertion_claims, which is not given it
        return client.public_keys()

    def process_assertion_claims(self, assertion: str, resolve_key) -> dict:
        header, _ = self.extract_assertion(assertion)
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(
                description=_clean(f"Assertion alg {alg} is not allowed; use RS384 or ES384")
            )
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise InvalidClientError(description="Assertion header has no kid")
        if header.get("typ") != "JWT":
            raise InvalidClientError(description="Assertion header typ must be JWT")
        if "jku" in header and header["jku"] != g.assertion_client.jwks_url:
            raise InvalidClientError(description="Assertion jku is not the registered JWKS URL")
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except JoseError as exc:
            raise InvalidClientError(description=_clean(exc.description or exc.error)) from exc
        self.verify_claims(token.claims)
        self.server._record("assertions", {"header": dict(token.header), "claims": token.claims})
        return token.claims

    def verify_claims(self, claims) -> None:
        # SMART's bounds on lifetime go first, so a refused assertion never uses up its jti.
        exp, iat, now = claims.get("exp"), claims.get("iat"), int(time.time())
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY:
                raise InvalidClientError(description="Assertion exp is more than 5 minutes ahead")
            if isinstance(iat, int | float) and exp - iat > MAX_ASSERTION_LIFETIME:
                raise InvalidClientError(description="Assertion lives more than 5 minutes")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise InvalidClientError(description="Invalid claim: jti")
        super().verify_claims(claims)

    def validate_jti(self, claims, jti: str) -> bool:
        return self.server._use_jti(claims["sub"], jti)


class SmartClientCredentialsGrant(ClientCredentialsGrant):
    """client_credentials, authenticated by private_key_jwt only, granting SMART scopes."""

    TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]  # noqa: RUF012 (authlib's class attribute)

    def validate_requested_scope(self):
        self.granted_scope = self.server.oauth.grant_scope(
            self.request.client, self.request.payload.scope
        )

    def create_token_response(self):
        token = self.generate_token(scope=self.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _AuthorizationServer(AuthorizationServer):
    def __init__(self, oauth: OAuthServer, app: Flask):
        self.oauth = oauth
        super().__init__(app, query_client=oauth.clients.get, save_token=oauth._save_token)

    def handle_error_response(self, request, error: OAuth2Error):
        if isinstance(error, InvalidClientError):
            error.status_code = self.oauth.invalid_client_status
        self.oauth._record(
            "errors", {"error": error.error, "error_description": error.get_error_description()}
        )
        return super().handle_error_response(request, error)


class OAuthServer:
    """The authorization server, its state, and the thread serving it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        expires_in: int = 300,
        scope_policy: str = "narrow",
        smart_versions: Iterable[str] = ("v1", "v2"),
        invalid_client_status: int = 401,
        audience: str | None = None,
    ):
        if scope_policy not in ("narrow", "reject"):
            raise ValueError("scope_policy is 'narrow' or 'reject'")
        self.expires_in = expires_in
        self.scope_policy = scope_policy
        self.smart_versions = tuple(smart_versions)
        self.invalid_client_status = invalid_client_status
        self.audience = audience
        self.clients: dict[str, Client] = {}
        #: Claims of every access token issued, oldest first.
        self.issued: list[dict] = []
        #: {"header", "claims"} of every client assertion accepted, oldest first.
        self.assertions: list[dict] = []
        #: {"error", "error_description"} of every error answered, oldest first.
        self.errors: list[dict] = []
        self._used_jtis: set[tuple[str, str]] = set()
        self._revoked: set[str] = set()
        #: Launch contexts by ``launch`` value, and authorization codes not yet exchanged.
        self.launches: dict[str, LaunchContext] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self._deny_next = False
        self._lock = threading.Lock()
        self._signing_key = self._new_signing_key()

        self.app = self._create_app()
        self._server = ThreadedServer(self.app, host, port, "oauth-server")
        self.port, self.url = self._server.port, self._server.url

    # -- addresses ---------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.url}/authorize"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.url}/introspect"

    # -- test controls -----------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        jwks_url: str | None = None,
        jwks: dict | KeySet | None = None,
        scopes: Iterable[str] | str = ("system/QuestionnaireResponse.c", "system/Observation.c"),
    ) -> Client:
        """Register (or replace) a client with a JWKS URL or an inline JWKS, and its scopes."""
        client = Client(client_id, scopes, jwks_url=jwks_url, jwks=jwks)
        with self._lock:
            self.clients[client_id] = client
        return client

    def register_launch_client(
        self, client_id: str, redirect_uris: Iterable[str] | str, scopes: Iterable[str] | str
    ) -> LaunchClient:
        """Register (or replace) a SMART App Launch public client."""
        uris = [redirect_uris] if isinstance(redirect_uris, str) else list(redirect_uris)
        client = LaunchClient(client_id, uris, scopes)
        with self._lock:
            self.clients[client_id] = client
        return client

    def register_launch(
        self, patient: str, aud: str, encounter: str | None = None, launch: str | None = None
    ) -> str:
        """Open a patient's chart in the "EHR": return the ``launch`` value naming that context."""
        launch = launch or secrets.token_urlsafe(16)
        with self._lock:
            self.launches[launch] = LaunchContext(patient, encounter, aud)
        return launch

    def deny_next(self) -> None:
        """Make the next authorization request end in ``access_denied`` (the user said no)."""
        with self._lock:
            self._deny_next = True

    def issue_token(self, client_id: str, scope: str) -> str:
        """Return an access token without any grant: for seeding a FHIR test server's data."""
        seeder = SimpleNamespace(client_id=client_id)
        token = self._generate_token("client_credentials", seeder, scope=scope)
        self._save_token(token, None)
        return token["access_token"]

    def revoke_all(self, rotate_key: bool = True) -> None:
        """Make every token issued so far invalid.

        ``verify_access_token`` and ``/introspect`` refuse them at once. With
        ``rotate_key`` the signing key changes too, so a verifier that fetches
        ``/jwks.json`` afresh (or on an unknown kid) refuses them as well; one that
        caches the old JWKS keeps accepting them until its cache expires.
        """
        with self._lock:
            self._revoked.update(claims["jti"] for claims in self.issued)
        if rotate_key:
            self.rotate_signing_key()

    def rotate_signing_key(self) -> None:
        """Sign new tokens with a new key and publish only it: old tokens stop verifying."""
        with self._lock:
            self._signing_key = self._new_signing_key()

    def reset(self) -> None:
        """Forget clients, issued tokens, seen jtis, errors and revocations."""
        with self._lock:
            self.clients.clear()
            self.issued.clear()
            self.assertions.clear()
            self.errors.clear()
            self._used_jtis.clear()
            self._revoked.clear()
            self.launches.clear()
            self.codes.clear()
            self._deny_next = False

    def stop(self) -> None:
        """Stop the server."""
        self._server.stop()

    def __enter__(self) -> OAuthServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- for FHIR test servers ---------------------------------------------------

    def jwks(self) -> dict:
        """Return the public JWKS that verifies access tokens."""
        return KeySet([self._signing_key]).as_dict(private=False)

    def smart_configuration(self) -> dict:
        """Return the .well-known/smart-configuration a FHIR server would publish."""
        capabilities = ["client-confidential-asymmetric"]
        capabilities += [f"permission-{version}" for version in self.smart_versions]
        config = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "token_endpoint": self.token_endpoint,
            "introspection_endpoint": self.introspection_endpoint,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [AUTH_METHOD],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "scopes_supported": sorted({s for c in self.clients.values() for s in c.scopes}),
            "capabilities": capabilities,
        }
        # The EHR launch is advertised once a launch client is registered.
        if any(isinstance(c, LaunchClient) for c in self.clients.values()):
            config["authorization_endpoint"] = self.authorization_endpoint
            config["grant_types_supported"].append("authorization_code")
            config["code_challenge_methods_supported"] = ["S256"]
            config["token_endpoint_auth_methods_supported"].append("none")
            capabilities += ["launch-ehr", "client-public"]
            capabilities += ["context-ehr-patient", "context-ehr-encounter"]
        return config

    def verify_access_token(self, token: str, scope: str | None = None) -> dict:
        """Return the claims of a live token this server issued; raise ValueError otherwise.

        With ``scope``, the token must also carry every scope in it (space-separated).
        """
        try:
            decoded = jwt.decode(token, self._signing_key, algorithms=[TOKEN_ALGORITHM])
            options: dict[str, Any] = {
                "iss": {"essential": True, "value": self.issuer},
                "exp": {"essential": True},
                "jti": {"essential": True},
            }
            if self.audience:
                options["aud"] = {"essential": True, "value": self.audience}
            jwt.JWTClaimsRegistry(**options).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise ValueError(f"invalid token: {exc}") from exc
        claims = decoded.claims
        if claims["jti"] in self._revoked:
            raise ValueError("invalid token: revoked")
        missing = set((scope or "").split()) - set(claims.get("scope", "").split())
        if missing:
            raise ValueError(f"insufficient scope: {' '.join(sorted(missing))}")
        return claims

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _new_signing_key() -> ECKey:
        return ECKey.generate_key(
            "P-256", parameters={"alg": TOKEN_ALGORITHM, "use": "sig"}, auto_kid=True
        )

    def _record(self, name: str, item: dict) -> None:
        with self._lock:
            getattr(self, name).append(item)

    def _use_jti(self, client_id: str, jti: str) -> bool:
        with self._lock:
            if (client_id, jti) in self._used_jtis:
                return False
            self._used_jtis.add((client_id, jti))
            return True

    def grant_scope(self, client: Client, scope: str | None) -> str:
        """Return the scopes to grant for a request, or raise InvalidScopeError."""
        requested = (scope or "").split()
        if not requested:
            raise InvalidScopeError(description="A scope is required")
        unsupported = [
            s for s in requested if (p := parse_scope(s)) and p[4] not in self.smart_versions
        ]
        if unsupported:
            raise InvalidScopeError(
                description=_clean(f"Unsupported scope syntax: {' '.join(unsupported)}")
            )
        granted = [s for s in dict.fromkeys(requested) if client.allows(s)]
        refused = [s for s in requested if s not in granted]
        if not granted or (refused and self.scope_policy == "reject"):
            raise InvalidScopeError(
                description=_clean(f"Scope not allowed for this client: {' '.join(refused)}")
            )
        return " ".join(granted)

    def _generate_token(
        self, grant_type, client, user=None, scope=None, expires_in=None, **kwargs
    ) -> dict:
        now = int(time.time())
        lifetime = expires_in or self.expires_in
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if self.audience:
            claims["aud"] = self.audience
        context = user if isinstance(user, LaunchContext) else None
        if context is not None:
            # The FHIR test server limits patient/* scopes to this patient's compartment.
            claims["patient"] = context.patient
        key = self._signing_key
        header = {"alg": TOKEN_ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
        token = {
            "access_token": jwt.encode(header, claims, key, algorithms=[TOKEN_ALGORITHM]),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scope,
        }
        if context is not None:
            token["patient"] = context.patient
            if context.encounter:
                token["encounter"] = context.encounter
        return token

    def _save_token(self, token: dict, oauth_request) -> None:
        payload = jws.extract_compact(token["access_token"].encode()).payload
        self._record("issued", json.loads(payload))

    def _create_app(self) -> Flask:
        app = Flask(f"oauth-server-{id(self)}")
        server = _AuthorizationServer(self, app)
        server.register_token_generator("default", self._generate_token)
        server.register_client_auth_method(AUTH_METHOD, SmartClientAssertion(self))
        server.register_grant(SmartClientCredentialsGrant)
        server.register_grant(SmartAuthorizationCodeGrant, [S256Only(required=True)])

        @app.get("/authorize")
        def authorize():
            # The "user" is already signed in to the EHR and consents at once, unless a test
            # asked for the next one to say no.
            try:
                grant = server.get_consent_grant(end_user=None)
            except OAuth2Error as error:
                return server.handle_error_response(request, error)
            with self._lock:
                deny, self._deny_next = self._deny_next, False
            user = None if deny else grant.request.launch_context
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/token")
        def token():
            return server.create_token_response()

        @app.get("/jwks.json")
        def jwks():
            return jsonify(self.jwks())

        @app.get("/.well-known/smart-configuration")
        def smart_configuration():
            return jsonify(self.smart_configuration())

        @app.post("/introspect")
        def introspect():
            try:
                claims = self.verify_access_token(request.form.get("token", ""))
            except ValueError:
                return jsonify({"active": False})
            return jsonify({"active": True, "token_type": "Bearer", **claims})

        return app


def start_oauth_server(port: int = 0, **options) -> OAuthServer:
    """Start an authorization server on 127.0.0.1:port (0 = a free port) in a daemon thread.

    ``options``: ``expires_in`` (300), ``scope_policy`` ("narrow" or "reject"),
    ``smart_versions`` (("v1", "v2")), ``invalid_client_status`` (401), ``audience``.
    """
    return OAuthServer(port=port, **options)


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    """A running authorization server shared by the session; ``reset()`` it for a clean slate."""
    server = start_oauth_server()
    yield server
    server.stop()
