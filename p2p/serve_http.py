"""The HTTP connections of ``p2p serve``: uvicorn's h11 protocol with the limits it lacks.

uvicorn closes idle keep-alive connections, but a connection that sends half a request line, or
headers and then half a body, stays open for as long as the client likes, and every open
connection holds a file descriptor. So here, per connection:

- a **connection limit**: past ``max_connections`` open connections a new one is answered 503
  and closed at once, so idle clients cannot use up the process's file descriptors;
- a **header timeout**: a request's line and headers must arrive within ``header_timeout``
  seconds of the connection opening or of the previous response;
- a **body timeout**: its body must arrive within ``body_timeout`` seconds of its headers.

A connection past a timeout is closed; the request being read sees a disconnect.
"""

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

BUSY = json.dumps({"error": "too many open connections; try again"}).encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                 + str(len(BUSY)).encode() + b"\r\n\r\n" + BUSY)


class GuardedH11Protocol(H11Protocol):
    """One HTTP/1.1 connection, with a connection limit and header and body timeouts."""

    def __init__(self, *args, max_connections: int, header_timeout: float,
                 body_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for = "headers"  # or "body", or None while the app answers

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self._expect("headers")

    def connection_lost(self, exc) -> None:
        self._expect(None)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # h11 tells how far the client's current request has come.
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._expect("body")
        elif state is not h11.IDLE:  # DONE, or an error being answered: nothing to wait for
            self._expect(None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._expect("headers")  # the next request on this keep-alive connection

    def _expect(self, what: str | None) -> None:
        if what == self.waiting_for and self.deadline is not None:
            return  # already timing this
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.waiting_for = what
        if what is not None:
            seconds = self.header_timeout if what == "headers" else self.body_timeout
            self.deadline = self.loop.call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # the app, if reading a body, sees a disconnect
