"""Every error answer is JSON `{"error": {"code", "message"}}`: `ApiError` and the upload
decoders' errors with their own status, request validation as 400, unknown routes and methods
as 404 / 405, the event store's database away as 503, and the server's own faults as 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import uploads
from server.events.store import StoreUnavailable


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def add_handlers(app: FastAPI) -> None:
    """Answer every error the app can raise in the JSON error body."""

    @app.exception_handler(ApiError)
    @app.exception_handler(uploads.UploadError)
    async def known_error(request: Request, e: Any) -> JSONResponse:
        return error_response(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        return error_response(400, "bad_request", problems)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(OperationalError)
    async def store_away(request: Request, e: Exception) -> JSONResponse:
        # The database is stopped, unreachable, full or read-only: the streams go on and the
        # call may be tried again (/readyz says "degraded" meanwhile).
        message = "the event store's database is unavailable just now; try again shortly"
        return error_response(503, "events_db_unavailable", message)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, e: Exception) -> JSONResponse:
        # Only the server's own faults get here (input errors are 4xx above). Starlette
        # re-raises the exception after this answer, so uvicorn logs it with its traceback.
        return error_response(500, "internal_error", "internal server error (see the server log)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail))
