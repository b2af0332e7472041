"""Listeners that play a server on 127.0.0.1 (an impostor, a TLS endpoint) for the tests that
prove what a rotator sends to whoever answers on a database's address."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Self


class Listener:
    """A random port on 127.0.0.1 and a thread per connection; `serve` says what it does. As a
    context manager it stops listening on the way out."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_exactly(sock: socket.socket, size: int, seen: Callable[[bytes], None] = lambda _: None) -> bytes:
    """Exactly `size` bytes from a client, each chunk handed to `seen` as it arrives (so that a
    listener records even what a client sends before it hangs up). OSError if it hangs up first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        seen(chunk)
        data += chunk
    return data
