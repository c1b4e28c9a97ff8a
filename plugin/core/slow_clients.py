"""Drop a request whose body stalls, so a slow or hostile client cannot hold a server thread.

gunicorn reads a request's headers before it hands the request to a thread, but the body is
read by the app, on a blocking socket with no timeout: a client that sends headers and then
stalls mid-body would hold that thread forever. BodyTimeout gives the connection's socket a
read timeout (BODY_TIMEOUT_SECONDS) while the app runs; a body that stalls longer is answered
408 and the connection closed. Outside gunicorn (the test client) it does nothing. In
production a reverse proxy that buffers bodies stands in front as well (docs/deploy.md).
"""

import contextlib
import socket

from flask import Flask
from werkzeug.exceptions import RequestTimeout

# Where gunicorn puts the connection's socket in the WSGI environ.
SOCKET = "gunicorn.socket"


class _TimedInput:
    """The request body stream, turning a socket timeout into a 408 and a closed connection."""

    def __init__(self, stream, sock: socket.socket):
        self._stream = stream
        self._sock = sock

    def _guard(self, method, *args):
        try:
            return method(*args)
        except TimeoutError as exc:
            # The rest of the body may never come, so the connection cannot carry another
            # request: reading ends here, and gunicorn closes it after the 408 goes out.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)
            raise RequestTimeout("The request body stalled.") from exc

    def read(self, *args):
        """Read, or 408 if the client stalls."""
        return self._guard(self._stream.read, *args)

    def readline(self, *args):
        """Read a line, or 408 if the client stalls."""
        return self._guard(self._stream.readline, *args)

    def readlines(self, *args):
        """Read lines, or 408 if the client stalls."""
        return self._guard(self._stream.readlines, *args)

    def __iter__(self):
        """Iterate over lines, or 408 if the client stalls."""
        return iter(self.readline, b"")


class BodyTimeout:
    """WSGI middleware: a request body that stalls for `seconds` is answered 408, then closed."""

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict, start_response):
        """Run the app with a read timeout on the connection; close it after a stall."""
        sock = environ.get(SOCKET)
        if sock is None:
            return self.app(environ, start_response)
        # Every read of this request's body now gives up after `seconds` without data;
        # gunicorn makes the socket blocking again before the connection's next request.
        sock.settimeout(self.seconds)
        environ["wsgi.input"] = _TimedInput(environ["wsgi.input"], sock)
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """Give every request body served by gunicorn a stall timeout."""
    app.wsgi_app = BodyTimeout(app.wsgi_app, app.config["BODY_TIMEOUT_SECONDS"])
