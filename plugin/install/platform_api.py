"""Call a telehealth platform's REST API for one practice, with its OAuth token kept fresh."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client.oauth2_session import OAuth2Auth, OAuth2ClientAuth
from authlib.oauth2.client import OAuth2Client
from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.crypto import Vault
from plugin.core.models import InstallEvent, Practice, PracticeStatus
from plugin.install.platforms import PlatformSettings, settings_for
from webhooks.events import is_iana_timezone

log = logging.getLogger(__name__)

TIMEOUT = (5, 15)
# Revocation at uninstall is best effort: it must never hold up the purge for long.
REVOKE_TIMEOUT = (1, 1.5)
# Refresh a token expiring this soon, so no call starts with a dying token.
REFRESH_MARGIN = 60
# Only these keys of a token response are kept (sealed); id_token and the like are dropped.
TOKEN_KEYS = ("access_token", "refresh_token", "token_type", "expires_at", "scope")


class PlatformError(Exception):
    """A platform call failed; `retryable` says whether the same call may succeed later.

    `reason` is safe to store and log (a status, an OAuth error code, an exception type);
    `response` is the platform's answer, when there was one.
    """

    retryable = False

    def __init__(
        self, reason: str, *, status: int | None = None, response: requests.Response | None = None
    ):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.response = response


class PlatformUnavailable(PlatformError):
    """The platform is down, slow or rate-limiting (5xx, 429, timeouts): try again later."""

    retryable = True


class PlatformAuthError(PlatformError):
    """The platform refused our refresh token: the installation needs re-authorisation."""


@dataclass(frozen=True)
class Identity:
    """Who consented: the platform account, its name and time zone, and the user's id and role."""

    account_id: str
    name: str
    timezone: str
    # The signed-in user's platform id (None when the platform gives none) ...
    user_id: str | None = None
    # ... and whether the platform says they administer the account (its identity call's role).
    is_admin: bool = False


class _OAuthClient(OAuth2Client):
    """authlib's OAuth 2 client (refresh, revocation, client auth) over our requests.Session."""

    client_auth_class = OAuth2ClientAuth
    token_auth_class = OAuth2Auth
    oauth_error_class = OAuthError
    SESSION_REQUEST_PARAMS = ("timeout",)


def oauth_client(settings: PlatformSettings, http: requests.Session, token: dict | None = None):
    """Return authlib's client for one platform, sending through http."""
    return _OAuthClient(
        http,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        token_endpoint_auth_method=settings.auth_method,
        revocation_endpoint_auth_method=settings.auth_method,
        token=token,
        leeway=REFRESH_MARGIN,
    )


def keep(token: dict) -> dict:
    """Return the parts of a token response worth storing."""
    kept = {key: token[key] for key in TOKEN_KEYS if token.get(key) is not None}
    if "expires_at" not in kept and token.get("expires_in"):
        kept["expires_at"] = int(time.time()) + int(token["expires_in"])
    return kept


def _url(settings: PlatformSettings, path: str) -> str:
    # Not urljoin: a path starting with "/" would drop the base's own path (".../v2").
    return f"{settings.api_base_url.rstrip('/')}/{path.lstrip('/')}"


def _request(
    http: requests.Session,
    settings: PlatformSettings,
    method: str,
    path: str,
    access_token: str,
    params: dict | None = None,
) -> requests.Response:
    """Send one call with a bearer token; map outages to PlatformUnavailable, return the rest."""
    try:
        response = http.request(
            method,
            _url(settings, path),
            params=params,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        raise PlatformUnavailable(f"unreachable ({type(exc).__name__})") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise PlatformUnavailable(
            f"answered {response.status_code}", status=response.status_code, response=response
        )
    return response


def _json(response: requests.Response) -> dict:
    if response.status_code >= 400:
        raise PlatformError(
            f"answered {response.status_code}", status=response.status_code, response=response
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # A gateway's HTML page with a 200: the platform is not itself; try again later.
        raise PlatformUnavailable(
            "answered something other than a JSON object",
            status=response.status_code,
            response=response,
        )
    return body


def fetch_identity(settings: PlatformSettings, token: dict, http: requests.Session) -> Identity:
    """Ask the platform which account a fresh token belongs to (the manifest's identity call)."""
    spec = settings.identity
    response = _request(http, settings, "GET", spec["path"], token["access_token"])
    body = _json(response)
    account_id = body.get(spec["account_id"])
    if not isinstance(account_id, str | int) or not str(account_id).strip():
        raise PlatformError("identity has no account id", status=response.status_code)
    account_id = str(account_id).strip()
    if len(account_id) > 128:
        raise PlatformError("identity account id is too long", status=response.status_code)
    names = [body.get(field) for field in spec["name"]]
    name = next((n.strip() for n in names if isinstance(n, str) and n.strip()), "")
    zone = body.get(spec.get("timezone", ""))
    user_id = body.get(spec.get("user_id", ""))
    user_id = str(user_id).strip()[:128] if isinstance(user_id, str | int) else ""
    role = body.get(spec.get("role", ""))
    return Identity(
        account_id=account_id,
        # The practice's name is shown to its clients; an empty one would read oddly.
        name=(name or f"{settings.display_name} account {account_id}")[:200],
        timezone=zone if isinstance(zone, str) and is_iana_timezone(zone) else "UTC",
        user_id=user_id or None,
        # No role field, or a role not listed, is not an admin: the console is refused.
        is_admin=isinstance(role, str) and role in spec.get("admin_roles", []),
    )


def revoke(settings: PlatformSettings, token: dict, http: requests.Session) -> bool:
    """Revoke a practice's grant (RFC 7009); best effort, so False rather than an exception."""
    if not (settings.revoke_url and settings.client_id):
        return False
    # One call: revoking the refresh token ends the grant, its access tokens with it (RFC 7009
    # section 2.1), and the uninstall webhook it runs in must answer within Zoom's 3 s.
    hint = "refresh_token" if token.get("refresh_token") else "access_token"
    try:
        response = oauth_client(settings, http).revoke_token(
            settings.revoke_url, token=token[hint], token_type_hint=hint, timeout=REVOKE_TIMEOUT
        )
    except requests.RequestException as exc:
        log.warning(
            "platform.revoke_failed", extra={"platform": settings.name, "error": type(exc).__name__}
        )
        return False
    if response.status_code != 200:
        log.warning(
            "platform.revoke_refused",
            extra={"platform": settings.name, "status": response.status_code},
        )
    return response.status_code == 200


class PlatformClient:
    """One practice's view of its platform's API; refreshes and persists its token as needed."""

    def __init__(
        self,
        session: Session,
        practice: Practice,
        *,
        config,
        vault: Vault,
        http: requests.Session,
        clock: Callable[[], float] = time.time,
    ):
        self.session = session
        self.practice = practice
        self.settings = settings_for(config, practice.platform)
        self.vault = vault
        self.http = http
        self.clock = clock

    def get_json(self, path: str, params: dict | None = None) -> dict:
        """GET a path under the platform's API base and return its JSON object."""
        return _json(self._request("GET", path, params))

    def _request(self, method: str, path: str, params: dict | None) -> requests.Response:
        token = self._token()
        if token.get("expires_at", 0) - self.clock() < REFRESH_MARGIN:
            token = self._refresh(token)
        response = _request(self.http, self.settings, method, path, token["access_token"], params)
        if response.status_code == 401:
            # Revoked or expired early on the platform's side: one refresh, one retry.
            token = self._refresh(token)
            response = _request(
                self.http, self.settings, method, path, token["access_token"], params
            )
            if response.status_code == 401:
                raise PlatformError(
                    "refused a freshly refreshed token", status=401, response=response
                )
        return response

    def _token(self) -> dict:
        if self.settings is None or not self.settings.installable:
            raise PlatformError(f"platform {self.practice.platform!r} is not configured")
        if self.practice.status == PracticeStatus.NEEDS_REAUTH:
            raise PlatformAuthError("the installation needs re-authorisation")
        if self.practice.platform_token is None:
            raise PlatformAuthError("the practice was not installed through the platform")
        return self.vault.open(self.practice.platform_token)

    def _refresh(self, used: dict) -> dict:
        """Refresh the token, unless another worker already did; persist the new one sealed."""
        # Lock the practice row (PostgreSQL) so two workers never spend one rotating refresh
        # token: the second would be refused and wrongly mark the installation needs_reauth.
        locked = self.session.scalar(
            select(Practice)
            .where(Practice.id == self.practice.id)
            # OF practices: PostgreSQL cannot lock the outer-joined EHR connection's side.
            .with_for_update(of=Practice)
            .execution_options(populate_existing=True)
        )
        if locked is None:
            self.session.rollback()
            raise PlatformAuthError("the practice was uninstalled")
        self.practice = locked
        current = self._token()
        if current.get("access_token") != used.get("access_token"):
            self.session.commit()
            return current
        if not current.get("refresh_token"):
            self._needs_reauth("no_refresh_token")
        client = oauth_client(self.settings, self.http, token=current)
        try:
            fresh = client.refresh_token(
                self.settings.token_url, refresh_token=current["refresh_token"], timeout=TIMEOUT
            )
        except OAuthError as exc:
            self.session.rollback()
            if exc.error == "invalid_grant":
                self._needs_reauth("invalid_grant")
            raise PlatformError(f"token refresh refused: {exc.error}") from exc
        except requests.HTTPError as exc:
            self.session.rollback()
            status = exc.response.status_code if exc.response is not None else None
            raise PlatformUnavailable(
                f"token endpoint answered {status}", status=status, response=exc.response
            ) from exc
        except (requests.RequestException, ValueError) as exc:
            self.session.rollback()
            raise PlatformUnavailable(f"token refresh failed ({type(exc).__name__})") from exc
        token = keep({**current, **fresh})
        self.practice.platform_token = self.vault.seal(token)
        self.session.commit()
        log.info("platform.token_refreshed", extra={"practice_id": self.practice.id})
        return token

    def _needs_reauth(self, reason: str) -> None:
        practice = self.practice
        practice.status = PracticeStatus.NEEDS_REAUTH
        self.session.add(
            InstallEvent(
                practice_id=practice.id,
                platform=practice.platform,
                account_id=practice.account_id,
                action="needs_reauth",
                detail={"reason": reason},
                created_at=datetime.now(UTC),
            )
        )
        self.session.commit()
        log.warning("platform.needs_reauth", extra={"practice_id": practice.id, "reason": reason})
        raise PlatformAuthError(f"refresh refused ({reason}): the practice must re-authorise")
