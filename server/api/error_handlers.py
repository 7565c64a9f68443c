"""Every failure as an HTTP response in OpenAI's error envelope, schema problems included (400, never FastAPI's 422
shape)."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from server.protocol.errors import APIError, error_body
from server.protocol.validation import describe_validation_error
from server.request_context import request_id

logger = logging.getLogger(__name__)


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 500:
            logger.error("%d: %s", exc.status, exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(list(exc.errors()))
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":  # no such route: in OpenAI's words
            message = f"Invalid URL ({request.method} {request.url.path})"
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names the methods of one route; the path may have several
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code, headers=headers)

    @app.exception_handler(ClientDisconnected)
    async def _gone(_: Request, exc: Exception) -> Response:
        logger.info("client disconnected; its request was cancelled")
        return Response(status_code=499)  # nobody is listening; nginx's code for it, for the logs

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"internal server error (request id {request_id.get()})"
        return JSONResponse(error_body(500, message), status_code=500)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (asked of the routes themselves: included routers too)."""
    return [method for method in _METHODS if any(
        route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.router.routes)]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
