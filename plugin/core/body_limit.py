"""Hold bodies sent without a Content-Length (chunked) to MAX_CONTENT_LENGTH, like the others.

Werkzeug refuses a declared Content-Length over the limit with 413, but a chunked body has
none: it reads up to the limit and then stops without saying so, so a view would get the body
cut short (a webhook would then fail its signature check with 401, a form would lose fields).
Reading one byte past the limit here and declaring the length lets Werkzeug answer 413 the
usual way, through the app's own error pages.
"""

import io

from flask import Flask
from werkzeug.wsgi import get_content_length


class BodyLimit:
    """WSGI middleware: give a body without a Content-Length one, reading at most limit + 1."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict, start_response):
        """Buffer an unlengthed body the server has terminated, then hand it on with its length."""
        # No length: none sent, or chunked (which Werkzeug reads as none). Without
        # wsgi.input_terminated the server gives no end to read to; Werkzeug then treats the
        # body as empty, which is safe.
        if get_content_length(environ) is None and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # The server has already undone the chunking; with a length the body is a plain one.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """Bound every request body, with or without a Content-Length, by MAX_CONTENT_LENGTH."""
    app.wsgi_app = BodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
