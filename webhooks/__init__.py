"""Inbound webhooks: one pure adapter module per telehealth platform.

Each adapter module exposes `PLATFORM` (its URL segment), `Verifier` (a class
built from the platform secret whose `verify(body, headers)` returns the
delivery id or raises InvalidSignatureError) and `parse(body, event_id)`
(returning SessionEnded or Ignored, or raising InvalidPayloadError). Adding a
platform means one module plus one line in ADAPTERS; Zoom will arrive as
`webhooks/zoom.py`.
"""

from types import MappingProxyType

from webhooks import standard

# Bodies above this are refused with 413 before they are read; adapters assume it.
MAX_BODY_BYTES = 64 * 1024

ADAPTERS = MappingProxyType({standard.PLATFORM: standard})
