"""The error the local gRPC stand-ins (Pub/Sub emulator, Cloud Run Jobs) answer RPCs with."""

from __future__ import annotations

import grpc


class ApiError(Exception):
    """An error an RPC answers with: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    """An INVALID_ARGUMENT error: the request itself is wrong."""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)
