"""The test authorization server is strict: only a SMART-shaped private_key_jwt gets a token.

The valid path uses authlib's client exactly as the product does: an OAuth2Session with
token_endpoint_auth_method="private_key_jwt" and a PrivateKeyJWT subclass that signs
RS384/ES384 with a kid, a five-minute exp and a fresh jti. The rejections post forged
assertions straight to the token endpoint.
"""

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from flask import Flask, jsonify
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from tests.support.oauth_server import parse_scope, scope_covers, start_oauth_server
from tests.support.wsgi_thread import ThreadedServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = "system/QuestionnaireResponse.c system/Observation.c"
CLIENT = "alliance-check"
INLINE_CLIENT = "alliance-check-inline"


class SmartPrivateKeyJWT(PrivateKeyJWT):
    """private_key_jwt as SMART Backend Services wants it (authlib's defaults do not fit).

    authlib's PrivateKeyJWT signs RS256, exp = iat + 3600 and no kid; passing
    ``claims=`` to it pins the first jti forever. Here: RS384/ES384, a kid and
    typ JWT, exp = iat + 300, and no claims so authlib draws a new jti each call.
    ``key`` is a joserfc RSAKey/ECKey (a PEM string would warn, and ES keys need it).
    """

    def __init__(self, key, kid: str, alg: str = "ES384", token_endpoint=None, expires_in=300):
        super().__init__(token_endpoint=token_endpoint, alg=alg)
        self.key = key
        self.kid = kid
        self.expires_in = expires_in

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            self.key,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            header={"kid": self.kid, "typ": "JWT"},
            expires_in=self.expires_in,
        )


class JwksHost:
    """A tiny real web server publishing a client's /.well-known/jwks.json."""

    def __init__(self, jwks: dict):
        self.jwks = jwks
        app = Flask("jwks-host")
        app.add_url_rule("/.well-known/jwks.json", "jwks", lambda: jsonify(self.jwks))
        self._server = ThreadedServer(app, "127.0.0.1", 0, "jwks-host")
        self.url = f"{self._server.url}/.well-known/jwks.json"

    def stop(self):
        self._server.stop()


def public(*keys) -> dict:
    return KeySet(list(keys)).as_dict(private=False)


@pytest.fixture(scope="module")
def keys() -> dict:
    return {
        "ec": ECKey.generate_key("P-384", parameters={"kid": "ec-1"}),
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        # Same kid as "ec", another key: a signature it makes must not verify.
        "impostor": ECKey.generate_key("P-384", parameters={"kid": "ec-1"}),
    }


@pytest.fixture(scope="module")
def jwks_host(keys):
    host = JwksHost(public(keys["ec"], keys["rsa"]))
    yield host
    host.stop()


@pytest.fixture(scope="module")
def running():
    server = start_oauth_server()
    yield server
    server.stop()


@pytest.fixture
def server(running, jwks_host, keys):
    """The module's server, reset, with one client on a JWKS URL and one with inline keys."""
    running.reset()
    jwks_host.jwks = public(keys["ec"], keys["rsa"])
    running.register_client(CLIENT, jwks_url=jwks_host.url, scopes=SCOPES)
    running.register_client(INLINE_CLIENT, jwks=public(keys["ec"]), scopes=SCOPES)
    return running


def session(server, key, kid, alg="ES384", client_id=CLIENT, scope=SCOPES) -> OAuth2Session:
    """Return an OAuth2Session set up the way the product sets one up."""
    http = OAuth2Session(
        client_id,
        token_endpoint=server.token_endpoint,
        token_endpoint_auth_method="private_key_jwt",
        scope=scope,
    )
    http.register_client_auth_method(SmartPrivateKeyJWT(key, kid, alg))
    return http


def forge(server, key, header=None, **claims) -> str:
    """Sign an assertion that is valid unless header/claims say otherwise (None drops one)."""
    now = int(time.time())
    head = {"alg": "ES384", "kid": "ec-1", "typ": "JWT"} | (header or {})
    body = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": server.token_endpoint,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    } | claims
    head = {k: v for k, v in head.items() if v is not None}
    body = {k: v for k, v in body.items() if v is not None}
    # jws, not jwt.encode: jwt.encode would add the typ a case may want absent.
    return jws.serialize_compact(head, json.dumps(body), key, algorithms=[head["alg"]])


def unsigned(server) -> str:
    """An alg=none assertion (joserfc will not make one)."""

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": server.token_endpoint, "exp": now + 300}
    return f"{b64({'alg': 'none', 'kid': 'ec-1', 'typ': 'JWT'})}.{b64(claims | {'jti': 'x'})}."


def post(server, assertion=None, scope=SCOPES, **form) -> requests.Response:
    data = {"grant_type": "client_credentials", "scope": scope} | form
    if assertion is not None:
        data |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    return requests.post(server.token_endpoint, data=data, timeout=10)


# -- the valid path, through authlib's client ----------------------------------------


def test_es384_assertion_gets_a_token_with_the_requested_scopes(server, keys):
    token = session(server, keys["ec"], "ec-1").fetch_token(server.token_endpoint)

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["scope"] == SCOPES
    (assertion,) = server.assertions
    assert assertion["header"] == {"alg": "ES384", "kid": "ec-1", "typ": "JWT"}
    claims = assertion["claims"]
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["aud"] == server.token_endpoint
    assert claims["exp"] - claims["iat"] == 300
    (issued,) = server.issued
    assert issued["sub"] == CLIENT and issued["scope"] == SCOPES
    assert issued["exp"] - issued["iat"] == 300


def test_rs384_assertion_gets_a_token(server, keys):
    token = session(server, keys["rsa"], "rsa-1", alg="RS384").fetch_token(server.token_endpoint)
    assert token["scope"] == SCOPES
    assert server.assertions[0]["header"]["alg"] == "RS384"


def test_inline_jwks_client_gets_a_token(server, keys):
    http = session(server, keys["ec"], "ec-1", client_id=INLINE_CLIENT)
    assert http.fetch_token(server.token_endpoint)["scope"] == SCOPES


def test_each_fetch_signs_a_fresh_jti(server, keys):
    http = session(server, keys["ec"], "ec-1")
    http.fetch_token(server.token_endpoint)
    http.fetch_token(server.token_endpoint)
    first, second = (a["claims"]["jti"] for a in server.assertions)
    assert first != second
    assert len(server.issued) == 2


def test_access_token_verifies_with_the_published_jwks(server, keys):
    token = session(server, keys["ec"], "ec-1").fetch_token(server.token_endpoint)

    jwks = KeySet.import_key_set(requests.get(server.jwks_url, timeout=10).json())
    decoded = jwt.decode(token["access_token"], jwks, algorithms=["ES256"])
    assert decoded.header["kid"] == jwks.keys[0].kid
    assert decoded.claims == server.issued[0]
    assert decoded.claims["iss"] == server.issuer
    assert server.verify_access_token(token["access_token"], "system/Observation.c")
    with pytest.raises(ValueError, match="insufficient scope"):
        server.verify_access_token(token["access_token"], "system/Patient.r")


def test_client_key_rotation_is_picked_up_from_the_jwks_url(server, jwks_host):
    rotated = ECKey.generate_key("P-384", parameters={"kid": "ec-2"})
    jwks_host.jwks = public(rotated)
    assert session(server, rotated, "ec-2").fetch_token(server.token_endpoint)


def test_expires_in_is_configurable(keys):
    with start_oauth_server(expires_in=60) as short:
        short.register_client(CLIENT, jwks=public(keys["ec"]), scopes=SCOPES)
        token = session(short, keys["ec"], "ec-1").fetch_token(short.token_endpoint)
    assert token["expires_in"] == 60
    assert short.issued[0]["exp"] - short.issued[0]["iat"] == 60


def test_smart_configuration_advertises_backend_services(server):
    config = requests.get(f"{server.url}/.well-known/smart-configuration", timeout=10).json()
    assert config["token_endpoint"] == server.token_endpoint
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert {"permission-v1", "permission-v2"} <= set(config["capabilities"])


# -- revocation ------------------------------------------------------------------------


def test_revoke_all_invalidates_outstanding_tokens(server, keys):
    http = session(server, keys["ec"], "ec-1")
    old = http.fetch_token(server.token_endpoint)["access_token"]
    old_jwks = requests.get(server.jwks_url, timeout=10).json()

    server.revoke_all()

    with pytest.raises(ValueError, match="invalid token"):
        server.verify_access_token(old)
    introspection = requests.post(server.introspection_endpoint, data={"token": old}, timeout=10)
    assert introspection.json() == {"active": False}
    new_jwks = KeySet.import_key_set(requests.get(server.jwks_url, timeout=10).json())
    assert new_jwks.as_dict() != old_jwks
    with pytest.raises(Exception, match="kid"):
        jwt.decode(old, new_jwks, algorithms=["ES256"])

    new = http.fetch_token(server.token_endpoint)["access_token"]
    assert server.verify_access_token(new)["sub"] == CLIENT
    introspection = requests.post(server.introspection_endpoint, data={"token": new}, timeout=10)
    assert introspection.json()["active"] is True


# -- rejections ------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


# case: (build an assertion from (server, keys), a fragment of the error_description it earns)
REJECTIONS = {
    "wrong aud": (lambda s, k: forge(s, k["ec"], aud=s.url), "aud"),
    "aud of another server": (
        lambda s, k: forge(s, k["ec"], aud="https://ehr.example/token"),
        "aud",
    ),
    "expired": (lambda s, k: forge(s, k["ec"], iat=_now() - 600, exp=_now() - 300), "expired"),
    "exp 1 hour ahead": (lambda s, k: forge(s, k["ec"], exp=_now() + 3600), "5 minutes ahead"),
    "exp 1 hour ahead, no iat": (
        lambda s, k: forge(s, k["ec"], iat=None, exp=_now() + 3600),
        "5 minutes ahead",
    ),
    "lives 301 s": (lambda s, k: forge(s, k["ec"], iat=_now(), exp=_now() + 301), "lives more"),
    "no exp": (lambda s, k: forge(s, k["ec"], exp=None), "exp"),
    "no jti": (lambda s, k: forge(s, k["ec"], jti=None), "JWT ID"),
    "wrong key, same kid": (lambda s, k: forge(s, k["impostor"]), "signature"),
    "unknown kid": (lambda s, k: forge(s, k["ec"], {"kid": "ec-9"}), "kid"),
    "no kid": (lambda s, k: forge(s, k["ec"], {"kid": None}), "no kid"),
    "alg does not fit the kid's key": (
        lambda s, k: forge(s, k["ec"], {"kid": "rsa-1"}),
        "requires 'EC' key",
    ),
    "typ not JWT": (lambda s, k: forge(s, k["ec"], {"typ": "at+jwt"}), "typ"),
    "no typ": (lambda s, k: forge(s, k["ec"], {"typ": None}), "typ"),
    "foreign jku": (
        lambda s, k: forge(s, k["ec"], {"jku": "https://attacker.example/jwks"}),
        "jku",
    ),
    "RS256": (lambda s, k: forge(s, k["rsa"], {"alg": "RS256", "kid": "rsa-1"}), "RS256"),
    "HS256": (lambda s, k: forge(s, OctKey.generate_key(256), {"alg": "HS256"}), "HS256"),
    "alg none": (lambda s, k: unsigned(s), "alg none"),
    "unknown client": (
        lambda s, k: forge(s, k["ec"], iss="stranger", sub="stranger"),
        "does not exist",
    ),
    "iss != sub": (lambda s, k: forge(s, k["ec"], iss="someone-else"), "Issuer and Subject"),
    "no sub": (lambda s, k: forge(s, k["ec"], sub=None), "sub"),
    "sub not a string": (lambda s, k: forge(s, k["ec"], sub=42), "sub"),
    "not a JWT": (lambda s, k: "not.a.jwt", "Invalid JWT"),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_bad_assertion_is_invalid_client(server, keys, case):
    build, reason = REJECTIONS[case]
    response = post(server, build(server, keys))

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert reason in response.json()["error_description"]
    assert not server.issued


def test_replayed_assertion_is_refused(server, keys):
    assertion = forge(server, keys["ec"])

    assert post(server, assertion).status_code == 200
    replay = post(server, assertion)

    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    assert len(server.issued) == 1


def test_concurrent_replays_get_one_token(server, keys):
    assertion = forge(server, keys["ec"])
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(server, assertion).status_code, range(8)))
    assert sorted(codes) == [200] + [401] * 7


def test_refused_assertion_does_not_use_up_its_jti(server, keys):
    jti = uuid.uuid4().hex
    assert post(server, forge(server, keys["ec"], aud=server.url, jti=jti)).status_code == 401
    assert post(server, forge(server, keys["ec"], jti=jti)).status_code == 200


def test_no_client_authentication_is_invalid_client(server):
    response = post(server, client_id=CLIENT)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_client_secret_is_not_accepted(server):
    response = post(server, client_id=CLIENT, client_secret="guess")
    assert response.status_code == 401
    basic = requests.post(
        server.token_endpoint,
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(CLIENT, "guess"),
        timeout=10,
    )
    assert basic.status_code == 401
    assert basic.json()["error"] == "invalid_client"


def test_unsupported_grant_type(server, keys):
    response = post(server, forge(server, keys["ec"]), grant_type="password")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_authlib_stock_private_key_jwt_is_refused(server, keys):
    """authlib's defaults (RS256, no kid, exp + 3600) are not SMART: the server says so."""
    http = OAuth2Session(
        CLIENT,
        keys["rsa"],
        token_endpoint=server.token_endpoint,
        token_endpoint_auth_method="private_key_jwt",
        scope=SCOPES,
    )
    http.register_client_auth_method(PrivateKeyJWT(server.token_endpoint))
    with pytest.raises(OAuthError) as refused:
        http.fetch_token(server.token_endpoint)
    assert refused.value.error == "invalid_client"
    assert "RS256" in refused.value.description


def test_authlib_claims_argument_pins_the_jti(server, keys):
    """PrivateKeyJWT(claims={...}) keeps the first jti forever, so the second fetch is a replay."""

    class PinnedJti(SmartPrivateKeyJWT):
        def sign(self, auth, token_endpoint):
            return private_key_jwt_sign(
                self.key,
                client_id=auth.client_id,
                token_endpoint=token_endpoint,
                alg=self.alg,
                claims=self.claims,
                header={"kid": self.kid, "typ": "JWT"},
                expires_in=300,
            )

    auth = PinnedJti(keys["ec"], "ec-1")
    auth.claims = {"purpose": "backend"}
    http = OAuth2Session(
        CLIENT,
        token_endpoint=server.token_endpoint,
        token_endpoint_auth_method="private_key_jwt",
        scope=SCOPES,
    )
    http.register_client_auth_method(auth)
    http.fetch_token(server.token_endpoint)
    with pytest.raises(OAuthError) as refused:
        http.fetch_token(server.token_endpoint)
    assert refused.value.error == "invalid_client"
    assert "jti" in auth.claims


# -- scopes ----------------------------------------------------------------------------


def test_disallowed_scope_is_invalid_scope(server, keys):
    http = session(server, keys["ec"], "ec-1", scope="system/Patient.r")
    with pytest.raises(OAuthError) as refused:
        http.fetch_token(server.token_endpoint)
    assert refused.value.error == "invalid_scope"
    response = post(server, forge(server, keys["ec"]), scope="system/Patient.r")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert not server.issued


def test_missing_scope_is_invalid_scope(server, keys):
    response = post(server, forge(server, keys["ec"]), scope="")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_partly_allowed_request_is_narrowed(server, keys):
    requested = "system/Observation.c system/Patient.r"
    token = session(server, keys["ec"], "ec-1", scope=requested).fetch_token(server.token_endpoint)
    assert token["scope"] == "system/Observation.c"


def test_reject_policy_refuses_a_partly_allowed_request(keys):
    with start_oauth_server(scope_policy="reject") as strict:
        strict.register_client(CLIENT, jwks=public(keys["ec"]), scopes=SCOPES)
        response = post(strict, forge(strict, keys["ec"]), scope=f"{SCOPES} system/Patient.r")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_v1_write_scopes(keys):
    with start_oauth_server() as ehr:
        ehr.register_client(CLIENT, jwks=public(keys["ec"]), scopes="system/*.write")
        requested = "system/QuestionnaireResponse.write system/Observation.write"
        token = session(ehr, keys["ec"], "ec-1", scope=requested).fetch_token(ehr.token_endpoint)
    assert token["scope"] == requested


def test_server_speaking_only_v2_refuses_v1_scopes(keys):
    with start_oauth_server(smart_versions=("v2",)) as ehr:
        ehr.register_client(CLIENT, jwks=public(keys["ec"]), scopes="system/Observation.cruds")
        response = post(ehr, forge(ehr, keys["ec"]), scope="system/Observation.write")
        assert ehr.smart_configuration()["capabilities"] == [
            "client-confidential-asymmetric",
            "permission-v2",
        ]
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("allowed", "requested", "granted"),
    [
        ("system/Observation.c", "system/Observation.c", True),
        ("system/Observation.cruds", "system/Observation.c", True),
        ("system/Observation.cud", "system/Observation.rs", False),
        ("system/*.c", "system/QuestionnaireResponse.c", True),
        ("system/Observation.write", "system/Observation.c", True),
        ("system/Observation.read", "system/Observation.c", False),
        ("system/Observation.c", "system/Observation.write", False),
        ("patient/Observation.c", "system/Observation.c", False),
        ("system/Observation.c", "system/Patient.c", False),
        ("system/Observation.rs?category=survey", "system/Observation.rs", False),
        ("system/Observation.rs", "system/Observation.rs?category=survey", True),
        ("launch", "launch", True),
        ("system/Observation.rc", "system/Observation.rc", True),  # literal match only
    ],
)
def test_scope_covers(allowed, requested, granted):
    assert scope_covers(allowed, requested) is granted


def test_parse_scope_refuses_out_of_order_v2_permissions():
    assert parse_scope("system/Observation.rc") is None
    assert parse_scope("system/Observation.cc") is None
    assert parse_scope("system/Observation.cr")[2] == frozenset("cr")
