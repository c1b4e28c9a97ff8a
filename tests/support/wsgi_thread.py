"""Serve a test server's WSGI app on 127.0.0.1 from a daemon thread, without an access log."""

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without the access log on stderr."""

    def log_request(self, *args, **kwargs) -> None:
        pass


class ThreadedServer:
    """A real HTTP server for one WSGI app, running until stop()."""

    def __init__(self, app, host: str, port: int, name: str):
        self._httpd = make_server(
            host, port, app, threaded=True, request_handler=QuietRequestHandler
        )
        self.port = self._httpd.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._thread.join(timeout=5)
        self._httpd.server_close()
