"""Our signing keys and SMART Backend Services tokens, against a real authorization server."""

import pytest
from sqlalchemy import select

from plugin.core.models import SigningKey
from plugin.ehr.errors import NoSigningKeyError, SmartError
from plugin.ehr.keys import current_signer, generate
from plugin.ehr.smart import ServerFacts, TokenCache, fetch_token

V2_SCOPE = "system/QuestionnaireResponse.c system/Observation.c"


@pytest.fixture
def vault(app):
    """Return the app's vault."""
    return app.extensions["vault"]


@pytest.fixture
def registered(app, client, db, vault, oauth_server):
    """Generate our key and register us with the authorization server by our published JWKS."""
    oauth_server.reset()
    generate(db, vault, "ES384")
    oauth_server.register_client("alliance", jwks=client.get("/.well-known/jwks.json").json)
    return oauth_server


def test_jwks_publishes_every_unretired_key_with_its_kid(client, db, vault, runner):
    first = generate(db, vault, "ES384")
    second = generate(db, vault, "RS384")
    keys = client.get("/.well-known/jwks.json").json["keys"]
    assert [k["kid"] for k in keys] == [second.kid, first.kid]
    assert {k["alg"] for k in keys} == {"ES384", "RS384"}
    assert all("d" not in k for k in keys)  # public halves only

    assert runner.invoke(args=["keys", "retire", second.kid]).exit_code != 0  # it signs now
    assert runner.invoke(args=["keys", "retire", first.kid]).exit_code == 0
    assert [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]] == [second.kid]


def test_newest_key_signs_after_rotation(db, vault):
    generate(db, vault, "ES384")
    newer = generate(db, vault, "ES384")
    assert current_signer(db, vault).kid == newer.kid


def test_private_keys_are_encrypted_at_rest(db, vault):
    generate(db, vault, "ES384")
    stored = db.scalar(select(SigningKey)).private_key
    assert b"PRIVATE KEY" not in stored


def test_no_key_means_a_clear_instruction(db, vault):
    with pytest.raises(NoSigningKeyError, match="keys generate"):
        current_signer(db, vault)


def test_keys_generate_command(runner):
    result = runner.invoke(args=["keys", "generate"])
    assert result.exit_code == 0 and "ES384" in result.output
    assert "signing" in runner.invoke(args=["keys", "list"]).output


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_token_with_smart_shaped_assertion(app, db, vault, client, oauth_server, alg):
    oauth_server.reset()
    key = generate(db, vault, alg)
    oauth_server.register_client("alliance", jwks=client.get("/.well-known/jwks.json").json)
    signer = current_signer(db, vault)
    token = fetch_token("alliance", oauth_server.token_endpoint, V2_SCOPE, signer)
    assert token["token_type"].lower() == "bearer"
    assert set(token["scope"].split()) == set(V2_SCOPE.split())
    [assertion] = oauth_server.assertions
    assert assertion["header"]["kid"] == key.kid
    assert assertion["header"]["alg"] == alg
    claims = assertion["claims"]
    assert claims["iss"] == claims["sub"] == "alliance"
    assert claims["aud"] == oauth_server.token_endpoint
    assert claims["exp"] - claims["iat"] <= 300


def test_each_token_request_uses_a_fresh_jti(registered, db, vault):
    signer = current_signer(db, vault)
    for _ in range(3):
        fetch_token("alliance", registered.token_endpoint, V2_SCOPE, signer)
    jtis = [a["claims"]["jti"] for a in registered.assertions]
    assert len(set(jtis)) == 3


def test_refused_scope_and_unknown_client_are_smart_errors(registered, db, vault):
    signer = current_signer(db, vault)
    with pytest.raises(SmartError, match="invalid_scope"):
        fetch_token("alliance", registered.token_endpoint, "system/Patient.d", signer)
    with pytest.raises(SmartError, match="invalid_client"):
        fetch_token("stranger", registered.token_endpoint, V2_SCOPE, signer)


def test_token_cache_reuses_until_shortly_before_expiry():
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0])
    fetched = []

    def fetch():
        fetched.append(1)
        return {"access_token": f"t{len(fetched)}", "expires_in": 300}

    assert cache.get("p", fetch) == "t1"
    now[0] = 239
    assert cache.get("p", fetch) == "t1"
    now[0] = 241  # within the 60 s margin
    assert cache.get("p", fetch) == "t2"
    cache.forget("p")
    assert cache.get("p", fetch) == "t3"
    assert cache.get("other-practice", fetch) == "t4"  # one token per practice


@pytest.mark.parametrize(
    ("v2", "qr_create", "scope"),
    [
        (True, True, "system/QuestionnaireResponse.c system/Observation.c"),
        (False, True, "system/QuestionnaireResponse.write system/Observation.write"),
        (True, False, "system/Observation.c system/DocumentReference.c"),
    ],
)
def test_scopes_follow_the_servers_dialect_and_abilities(v2, qr_create, scope):
    facts = ServerFacts("https://t", v2, True, qr_create, True, True)
    assert facts.scope() == scope
