"""ASGI middleware: request ids, body-size limit, and per-endpoint request metrics."""

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import Metrics
from server.protocol.errors import APIError
from server.request_context import new_request_id, request_id


class RequestContext:
    """Every response carries X-Request-ID (the client's, or a new one); log lines of the request carry it too.

    A request whose handler listened for a disconnect (routes.until_disconnected) gets `Connection: close`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"x-request-id")
        rid = new_request_id(sent.decode("latin-1") if sent else None)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
                if scope.get("state", {}).get("close_connection"):
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class BodyLimit:
    """413 for bodies over the limit: at once from Content-Length, or as soon as a chunked body passes it.

    File uploads (paths under `upload_prefix`) are spooled to disk and decoded as they are read, so they may be
    large; every other body (JSON, with base64 audio in it) is parsed in memory, so it gets the smaller limit.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_json_bytes: int, upload_prefix: str) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes
        self.upload_prefix = upload_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].startswith(self.upload_prefix)
        limit = self.max_upload_bytes if upload else self.max_json_bytes
        too_large = APIError(413, f"the request body is larger than the server's limit of {limit / 2**20:g} MiB "
                                  f"({'--max-upload-mb' if upload else '--max-json-mb'})", code="payload_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await send_error(send, too_large)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            return message

        await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Counts every response by endpoint and status and times it to its last byte (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)


async def send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

