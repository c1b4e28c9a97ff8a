"""Find a free TCP port on 127.0.0.1 for a server a test starts."""

import socket


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
