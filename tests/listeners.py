"""Listeners that play a server on 127.0.0.1 (an impostor, a TLS endpoint) for the tests that
prove what a rotator sends to whoever answers on a database's address."""

from __future__ import annotations

import socket
import threading


class Listener:
    """A random port on 127.0.0.1 and a thread per connection; `serve` says what it does."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.server = socket.create_server((self.host, 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()
