"""Inbound webhooks: one pure adapter module per telehealth platform.

Each adapter module exposes:
- `PLATFORM`, its URL segment (POST /webhooks/<PLATFORM>);
- `Verifier(secret)`, whose `verify(body, headers)` returns the delivery id or raises
  InvalidSignatureError;
- `parse(body, event_id)`, returning SessionEnded, UrlValidation, Uninstalled or Ignored, or
  raising InvalidPayloadError;
- `answer_challenge(secret, event)`, if the platform sends UrlValidation challenges;
- `attendee_emails(fetch, session_id)`, if its SessionEnded events leave `client` None and the
  worker must ask the platform's API who attended.

Adding a platform means one module here plus one entry in ADAPTERS (and the manifest's
platform table); nothing in plugin/ names a platform.
"""

from types import MappingProxyType

from webhooks import standard, zoom

# Bodies above this are refused with 413 before they are read; adapters assume it.
MAX_BODY_BYTES = 64 * 1024

ADAPTERS = MappingProxyType({standard.PLATFORM: standard, zoom.PLATFORM: zoom})
