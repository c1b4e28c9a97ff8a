"""A real OAuth 2.0 authorization server playing a telehealth platform (Zoom's shape) for tests.

Built on authlib's Flask ``AuthorizationServer``, it runs on 127.0.0.1 in a daemon thread and
serves what the install flow and the platform API client talk to:

- ``GET /authorize``: the authorization code grant with PKCE. A ``code_challenge`` with
  method ``S256`` is required from every client (``plain`` and none are refused). Consent is
  automatic for ``account``; ``deny_next()`` makes the next request answer
  ``error=access_denied``, the way a platform reports a refused consent.
- ``POST /token``: ``authorization_code`` (a code works once; replaying it is refused with
  ``invalid_grant`` and revokes the tokens it gave, as RFC 6749 section 4.1.2 asks) and
  ``refresh_token`` (rotating: each refresh gives a new refresh token and revokes the old).
  Clients authenticate with ``client_secret_basic``.
- ``POST /revoke``: RFC 7009 revocation; ``revocations`` records what was revoked.
- ``GET /v2/users/me``: Zoom's identity call, protected by authlib's ``ResourceProtector``:
  the account and user of the token's grant (``account_id``, ``company``, ``timezone``, and
  the user's ``id``, ``email`` and ``role_name``: Owner, Admin or Member).
  The server hosts this one API endpoint because it validates its own tokens.

Test controls: ``register_client``, ``account`` (who consents next), ``deny_next``,
``expire_access_tokens`` (the platform drops access tokens early: calls get 401),
``revoke_refresh_tokens`` (the platform revoked the grant: refreshes get ``invalid_grant``),
``expires_in``, ``reset``. ``tokens`` lists every token issued.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, request

from tests.support.wsgi_thread import ThreadedServer

AUTH_METHOD = "client_secret_basic"


@dataclass
class Client(ClientMixin):
    """A registered confidential client: id, secret, its one exact redirect URI and scopes."""

    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact match only, as the platforms we play require.
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == AUTH_METHOD

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    account: dict
    code_challenge: str
    code_challenge_method: str
    used: bool = False
    tokens: list = field(default_factory=list)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token(TokenMixin):
    client_id: str
    account: dict
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expires_in: int
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> dict:
        return self.account

    def get_client(self) -> ClientMixin:
        return None


class RequireS256(CodeChallenge):
    """PKCE for every client, confidential ones too, and only with S256."""

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required")
        super().validate_code_challenge(grant, redirect_uri)


class PlatformServer:
    """The authorization server, its in-memory state, and the thread serving it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, expires_in: int = 3600):
        self.expires_in = expires_in
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: list[Token] = []
        #: (token_type_hint, client_id) of every token revoked through /revoke.
        self.revocations: list[tuple[str | None, str]] = []
        self.account = self.default_account()
        self._deny_next = False
        self._lock = threading.Lock()

        self.app = self._create_app()
        self._server = ThreadedServer(self.app, host, port, "platform-server")
        self.port, self.url = self._server.port, self._server.url

    # -- addresses ---------------------------------------------------------------

    def settings(self, name: str = "ZOOM") -> dict:
        """Return the app settings that point platform `name` at this server."""
        return {
            f"{name}_AUTHORIZE_URL": f"{self.url}/authorize",
            f"{name}_TOKEN_URL": f"{self.url}/token",
            f"{name}_REVOKE_URL": f"{self.url}/revoke",
            f"{name}_API_BASE_URL": f"{self.url}/v2",
        }

    # -- test controls -----------------------------------------------------------

    @staticmethod
    def default_account() -> dict:
        return {
            "id": "user-host-1",
            "account_id": "zoom-acct-1",
            "company": "Riverside Therapy",
            "display_name": "Robin Admin",
            "email": "robin.admin@example.org",
            # Zoom's users/me names the user's role in the account: Owner, Admin or Member.
            "role_name": "Owner",
            "timezone": "America/New_York",
        }

    def register_client(
        self, client_id: str, client_secret: str, redirect_uri: str, scope: str
    ) -> Client:
        """Register (or replace) a confidential client."""
        client = Client(client_id, client_secret, redirect_uri, scope)
        with self._lock:
            self.clients[client_id] = client
        return client

    def deny_next(self) -> None:
        """Make the next authorization request end in error=access_denied."""
        self._deny_next = True

    def expire_access_tokens(self) -> None:
        """Drop every access token issued so far; their refresh tokens still work."""
        with self._lock:
            for token in self.tokens:
                token.access_revoked = True

    def revoke_refresh_tokens(self) -> None:
        """Revoke every grant so far: refresh tokens are refused with invalid_grant."""
        with self._lock:
            for token in self.tokens:
                token.refresh_revoked = True

    def live_tokens(self, client_id: str | None = None) -> list[Token]:
        """Return the tokens whose access or refresh token still works."""
        return [
            t
            for t in self.tokens
            if (client_id is None or t.client_id == client_id)
            and not (t.access_revoked and t.refresh_revoked)
        ]

    def reset(self) -> None:
        """Forget clients, codes, tokens and revocations; the default account consents next."""
        with self._lock:
            self.clients.clear()
            self.codes.clear()
            self.tokens.clear()
            self.revocations.clear()
            self.account = self.default_account()
            self._deny_next = False

    def stop(self) -> None:
        """Stop the server."""
        self._server.stop()

    # -- storage -----------------------------------------------------------------

    def _find_token(self, value: str, kind: str) -> Token | None:
        return next((t for t in self.tokens if getattr(t, kind) == value), None)

    def _save_token(self, token: dict, oauth_request) -> None:
        saved = Token(
            client_id=oauth_request.client.client_id,
            account=oauth_request.user,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            issued_at=time.time(),
            expires_in=token["expires_in"],
        )
        with self._lock:
            self.tokens.append(saved)
            code = getattr(oauth_request, "authorization_code", None)
            if code is not None:
                code.tokens.append(saved)

    # -- the server --------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(f"platform-server-{id(self)}")
        outer = self

        class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]  # noqa: RUF012 (authlib's attribute)

            def save_authorization_code(self, code, oauth_request):
                payload = oauth_request.payload
                outer.codes[code] = Code(
                    code=code,
                    client_id=oauth_request.client.client_id,
                    redirect_uri=payload.redirect_uri,
                    scope=oauth_request.scope,
                    account=dict(oauth_request.user),
                    code_challenge=payload.data["code_challenge"],
                    code_challenge_method=payload.data["code_challenge_method"],
                )

            def query_authorization_code(self, code, client):
                found = outer.codes.get(code)
                if found is None or found.client_id != client.client_id:
                    return None
                if found.used:
                    # A replayed code: refuse it and revoke what it gave (RFC 6749 4.1.2).
                    for token in found.tokens:
                        token.access_revoked = token.refresh_revoked = True
                    return None
                return found

            def delete_authorization_code(self, authorization_code):
                authorization_code.used = True

            def authenticate_user(self, authorization_code):
                return authorization_code.account

        class RefreshTokenGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]  # noqa: RUF012
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token):
                token = outer._find_token(refresh_token, "refresh_token")
                if token is not None and not token.refresh_revoked:
                    return token
                return None

            def authenticate_user(self, credential):
                return credential.account

            def revoke_old_credential(self, credential):
                credential.refresh_revoked = True
                credential.access_revoked = True

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = [AUTH_METHOD]  # noqa: RUF012

            def query_token(self, token_string, token_type_hint):
                if token_type_hint == "access_token":
                    return outer._find_token(token_string, "access_token")
                if token_type_hint == "refresh_token":
                    return outer._find_token(token_string, "refresh_token")
                return outer._find_token(token_string, "access_token") or outer._find_token(
                    token_string, "refresh_token"
                )

            def revoke_token(self, token, oauth_request):
                hint = oauth_request.form.get("token_type_hint")
                token.access_revoked = True
                if hint != "access_token":
                    token.refresh_revoked = True
                outer.revocations.append((hint, token.client_id))

        class Validator(BearerTokenValidator):
            def authenticate_token(self, token_string):
                return outer._find_token(token_string, "access_token")

        server = AuthorizationServer(
            app, query_client=self.clients.get, save_token=self._save_token
        )
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(32),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: outer.expires_in,
            ),
        )
        server.register_grant(AuthorizationCodeGrant, [RequireS256(required=True)])
        server.register_grant(RefreshTokenGrant)
        server.register_endpoint(Revocation)
        require_oauth = ResourceProtector()
        require_oauth.register_token_validator(Validator())

        @app.get("/authorize")
        def authorize():
            # No login page: the account consents at once, unless told to refuse.
            account = dict(outer.account)
            try:
                grant = server.get_consent_grant(end_user=account)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            granted = None if outer._deny_next else account
            outer._deny_next = False
            return server.create_authorization_response(grant_user=granted, grant=grant)

        @app.post("/token")
        def token():
            return server.create_token_response()

        @app.post("/revoke")
        def revoke():
            return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

        @app.get("/v2/users/me")
        @require_oauth()
        def users_me():
            return jsonify(current_token.account)

        @app.get("/v2/echo")
        @require_oauth()
        def echo():
            """An API call for the client tests: its query string, and whose token it was."""
            return jsonify(
                {"args": request.args, "account_id": current_token.account["account_id"]}
            )

        @app.get("/v2/status/<int:status>")
        @require_oauth()
        def status(status: int):
            """Answer with the given status, as a platform in trouble does."""
            return jsonify({"code": status, "message": "as asked"}), status

        return app


def start_platform_server(port: int = 0, **options) -> PlatformServer:
    """Start the platform's authorization server on 127.0.0.1:port (0 = a free port)."""
    return PlatformServer(port=port, **options)


@pytest.fixture(scope="session")
def platform_server() -> Iterator[PlatformServer]:
    """A running platform authorization server shared by the session; reset per test."""
    server = start_platform_server()
    yield server
    server.stop()


ZOOM_APP = {"ZOOM_CLIENT_ID": "alliance-check-zoom", "ZOOM_CLIENT_SECRET": "zoom-test-secret"}


def register_zoom_app(server, base_url: str = "http://localhost"):
    """Reset the platform server and register our Zoom app, calling back to base_url."""
    from plugin.install.platforms import platform_table

    server.reset()
    scopes = " ".join(s["scope"] for s in platform_table()["zoom"]["oauth"]["scopes"])
    server.register_client(
        ZOOM_APP["ZOOM_CLIENT_ID"],
        ZOOM_APP["ZOOM_CLIENT_SECRET"],
        f"{base_url}/oauth/callback",
        scopes,
    )
    return server


def zoom_settings(server) -> dict:
    """Return the settings that make Zoom installable against the test platform server."""
    return {**server.settings("ZOOM"), **ZOOM_APP}
