"""manifest.json: valid against its schema, in step with the adapters, printed per deployment."""

import copy
import json
from importlib.metadata import version

import pytest

from plugin.ehr.launch import LAUNCH_SCOPE
from plugin.install.platforms import ManifestError, load_manifest, platform_table, validate_manifest
from webhooks import ADAPTERS
from webhooks.errors import InvalidPayloadError
from webhooks.events import Ignored

BASE = "https://alliance.example.org"


def printed(runner, *args):
    return runner.invoke(args=["manifest", *args])


def test_the_committed_manifest_is_valid():
    validate_manifest(load_manifest())


def test_the_manifest_version_is_the_package_version():
    assert load_manifest()["version"] == version("alliance-check")


def test_every_platform_has_an_adapter_and_every_adapter_a_platform():
    assert set(platform_table()) == set(ADAPTERS)


@pytest.mark.parametrize(
    ("platform", "event"),
    [(p, e) for p, entry in platform_table().items() for e in entry["webhook"]["events"]],
)
def test_every_subscribed_event_is_handled_by_its_adapter(platform, event):
    # Adapters ignore event types they do not handle; a handled one gets past that to the
    # payload's own checks. The envelope key differs by platform, so both are given.
    body = json.dumps({"type": event, "event": event}).encode()
    try:
        parsed = ADAPTERS[platform].parse(body, "evt-1")
    except InvalidPayloadError:
        return
    assert not isinstance(parsed, Ignored)


def test_manifest_command_prints_exact_absolute_urls(runner):
    result = printed(runner, "--base-url", BASE)

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    validate_manifest(manifest)
    assert manifest["base_url"] == BASE
    assert manifest["urls"] == {
        "redirect_uri": f"{BASE}/oauth/callback",
        "admin_console": f"{BASE}/setup",
        "smart_launch": f"{BASE}/launch",
        "smart_launch_redirect_uri": f"{BASE}/launch/callback",
        "jwks": f"{BASE}/.well-known/jwks.json",
    }
    assert manifest["platforms"]["zoom"]["webhook"]["url"] == f"{BASE}/webhooks/zoom"
    assert manifest["platforms"]["zoom"]["install_url"] == f"{BASE}/install/zoom"
    assert manifest["platforms"]["standard"]["webhook"]["url"] == f"{BASE}/webhooks/standard"
    assert manifest["platforms"]["zoom"]["oauth"]["authorize_url"] == (
        "https://zoom.us/oauth/authorize"
    )


def test_manifest_command_accepts_a_port_and_a_trailing_slash(runner):
    result = printed(runner, "--base-url", "https://alliance.example.org:8443/")

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["urls"]["redirect_uri"] == "https://alliance.example.org:8443/oauth/callback"


def test_manifest_command_defaults_to_the_public_base_url(app, runner):
    app.config["PUBLIC_BASE_URL"] = "https://checks.practice.example"

    result = printed(runner)

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["urls"]["admin_console"] == (
        "https://checks.practice.example/setup"
    )


@pytest.mark.parametrize(
    ("base_url", "complaint"),
    [
        ("http://alliance.example.org", "https://"),
        ("https://alliance.example.org/app", "origin only"),
        ("https://alliance.example.org?x=1", "origin only"),
        ("https://alliance.example.org#top", "origin only"),
        ("https://user:pw@alliance.example.org", "origin only"),
        ("https://", "https://"),
        ("", "https://"),
        ("alliance.example.org", "https://"),
        ("https://alliance.example.org:99999", "port"),
    ],
)
def test_manifest_command_refuses_a_bad_base_url(runner, base_url, complaint):
    result = printed(runner, "--base-url", base_url)

    assert result.exit_code == 2
    assert "--base-url" in result.output
    assert complaint in result.output


def test_manifest_command_refuses_the_default_http_base_url(app, runner):
    app.config["PUBLIC_BASE_URL"] = "http://127.0.0.1:5000"

    result = printed(runner)

    assert result.exit_code == 2
    assert "https://" in result.output


def mutated(change) -> dict:
    manifest = copy.deepcopy(load_manifest())
    change(manifest)
    return manifest


def _set(path: str, value):
    def change(manifest):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _delete(path: str):
    def change(manifest):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[last]

    return change


def _printed_with(path: str, value):
    """The printed form (base_url set, URLs absolute) with one URL changed."""

    def change(manifest):
        manifest["base_url"] = BASE
        manifest["urls"] = {k: BASE + v for k, v in manifest["urls"].items()}
        for entry in manifest["platforms"].values():
            entry["install_url"] = BASE + entry["install_url"]
            entry["webhook"]["url"] = BASE + entry["webhook"]["url"]
        _set(path, value)(manifest)

    return change


@pytest.mark.parametrize(
    "change",
    [
        _set("listing_fee", 0),
        _set("vendor.phone", "+1 555 0100"),
        _set("platforms.zoom.oauth.scopes.0.why", "extra key"),
        _delete("platforms.zoom.oauth.scopes.0.reason"),
        _set("platforms.zoom.oauth.scopes.0.reason", ""),
        _set("platforms.zoom.oauth.scopes", []),
        _set("platforms.zoom.oauth.token_url", "http://zoom.us/oauth/token"),
        _set("platforms.zoom.oauth.authorize_url", "zoom.us/oauth/authorize"),
        _set("platforms.zoom.api_base_url", "ftp://api.zoom.us/v2"),
        _set("support_url", "http://alliance-check.org/support"),
        _set("privacy_url", "https://alliance-check.org/privacy policy"),
        _set("platforms.zoom.webhook.events", ["meeting.ended", "meeting.started"]),
        _set("platforms.standard.webhook.events", ["session.ended", "meeting.ended"]),
        _set("platforms.zoom.webhook.events", []),
        _set("platforms.teams", copy.deepcopy(load_manifest()["platforms"]["zoom"])),
        _set("platforms.zoom.webhook.url", "/webhooks/standard"),
        _set("platforms.zoom.install_url", "/install/standard"),
        _delete("platforms.zoom.install_url"),
        _set("urls.redirect_uri", "https://alliance.example.org/oauth/callback"),
        _set("urls.redirect_uri", "oauth/callback"),
        _delete("urls.jwks"),
        _delete("smart_launch"),
        _set("smart_launch.scopes.0.scope", "system/Observation.rs"),
        _set("smart_launch.scopes.3.scope", "patient/Observation.c"),
        _delete("data_retention"),
        _printed_with("urls.redirect_uri", "/oauth/callback"),
        _printed_with("urls.admin_console", "http://alliance.example.org/setup"),
        _printed_with("platforms.zoom.webhook.url", "http://alliance.example.org/webhooks/zoom"),
        _printed_with("base_url", "http://alliance.example.org"),
        _printed_with("platforms.standard.install_url", "/install/standard"),
    ],
    ids=[
        "unknown top-level key",
        "unknown vendor key",
        "unknown scope key",
        "scope without a reason",
        "scope with an empty reason",
        "no scopes",
        "http token url",
        "token url without a scheme",
        "ftp api base",
        "http support url",
        "url with a space",
        "zoom event no adapter handles",
        "standard event of another adapter",
        "no events",
        "platform without an adapter",
        "webhook url of another platform",
        "install url of another platform",
        "missing install url",
        "committed form with an absolute url of ours",
        "relative url without a slash",
        "missing jwks url",
        "missing smart launch",
        "system scope for the launch",
        "write scope for the launch",
        "missing retention statement",
        "printed form with a relative url",
        "printed form with an http url",
        "printed form with an http webhook url",
        "http base url",
        "printed form with a relative install url",
    ],
)
def test_the_schema_refuses_a_bad_manifest(change):
    with pytest.raises(ManifestError):
        validate_manifest(mutated(change))


def test_the_retention_statement_covers_uninstall_and_unwritten_answers():
    statement = load_manifest()["data_retention"]

    assert "uninstall" in statement
    # Acknowledged answers are delivered first, within a stated time, then purged.
    assert "already submitted are still written to the practice's EHR" in statement
    assert "for up to 24 hours" in statement


def test_every_scope_has_a_reason_and_platform_urls_are_overridable(app):
    from plugin.install.platforms import settings_for

    app.config["ZOOM_TOKEN_URL"] = "https://sandbox.zoom.example/oauth/token"
    settings = settings_for(app.config, "zoom")

    assert settings.token_url == "https://sandbox.zoom.example/oauth/token"
    assert settings.authorize_url == "https://zoom.us/oauth/authorize"
    assert settings.installable is False  # no client id configured
    standard = settings_for(app.config, "standard")
    assert standard.authorize_url is None and standard.installable is False


def test_every_url_of_ours_in_the_manifest_is_served(app):
    adapter = app.url_map.bind("localhost")
    manifest = load_manifest()
    routes = [
        ("GET", manifest["urls"]["redirect_uri"]),
        ("GET", manifest["urls"]["admin_console"]),
        ("GET", manifest["urls"]["jwks"]),
        ("GET", manifest["urls"]["smart_launch"]),
        ("GET", manifest["urls"]["smart_launch_redirect_uri"]),
    ]
    for entry in manifest["platforms"].values():
        routes += [("GET", entry["install_url"]), ("POST", entry["webhook"]["url"])]

    for method, path in routes:
        adapter.match(path, method=method)  # raises NotFound / MethodNotAllowed


def test_the_smart_launch_urls_and_scopes_are_what_the_launch_view_uses(client):
    manifest = load_manifest()
    assert manifest["urls"]["smart_launch"] == "/launch"
    assert manifest["urls"]["smart_launch_redirect_uri"] == "/launch/callback"
    listed = [entry["scope"] for entry in manifest["smart_launch"]["scopes"]]
    assert " ".join(listed) == LAUNCH_SCOPE


def test_the_smart_launch_url_refuses_an_ehr_no_practice_connected(client):
    response = client.get("/launch?iss=https://ehr.example.org/fhir&launch=abc")
    assert response.status_code == 403
    assert "This EHR is not connected" in response.get_data(as_text=True)
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_system_scope_the_ehr_is_asked_for_is_listed_with_its_reason():
    from plugin.ehr.smart import ServerFacts, flag_scope, search_scope

    listed = {entry["scope"] for entry in load_manifest()["backend_services"]["scopes"]}
    asked = set()
    for qr in (True, False):
        facts = ServerFacts("https://ehr.example/token", True, True, qr, True, not qr)
        asked |= set(facts.scope().split())
    asked.add(flag_scope(True))
    # Resolution (Patient; Appointment and Practitioner for the schedule) and the rupture rule.
    asked |= {search_scope(kind, True) for kind in ("Patient", "Observation")}
    asked |= {search_scope(kind, True) for kind in ("Appointment", "Practitioner")}
    # The client's consent to texts, read when a session is planned.
    asked.add(search_scope("Consent", True))
    assert asked == listed
