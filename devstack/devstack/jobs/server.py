"""The gRPC front: google.cloud.run.v2.Jobs and Executions, and google.longrunning.Operations."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf import empty_pb2

from devstack.jobs import wire as w
from devstack.jobs.state import Store
from devstack.jobs.wire import ApiError

log = logging.getLogger(__name__)

_EMPTY = empty_pb2.Empty()
# A WaitOperation without a timeout, or with a longer one, answers after this long at most.
_MAX_WAIT_SECONDS = 60.0


class JobsService:
    """The handlers; each is (request, context) -> response and may raise ApiError."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # google.cloud.run.v2.Jobs

    def CreateJob(self, request, context):
        return self.store.create_job(request)

    def GetJob(self, request, context):
        return self.store.get_job(request.name)

    def ListJobs(self, request, context):
        return self.store.list_jobs(request)

    def UpdateJob(self, request, context):
        return self.store.update_job(request)

    def DeleteJob(self, request, context):
        return self.store.delete_job(request)

    def RunJob(self, request, context):
        return self.store.run_job(request)

    # google.cloud.run.v2.Executions

    def GetExecution(self, request, context):
        return self.store.get_execution(request.name)

    def ListExecutions(self, request, context):
        return self.store.list_executions(request)

    def DeleteExecution(self, request, context):
        return self.store.delete_execution(request)

    def CancelExecution(self, request, context):
        return self.store.cancel_execution(request)

    # google.longrunning.Operations

    def GetOperation(self, request, context):
        return self.store.operations.get(request.name)

    def ListOperations(self, request, context):
        return self.store.operations.list(request)

    def DeleteOperation(self, request, context):
        self.store.operations.delete(request.name)
        return _EMPTY

    def WaitOperation(self, request, context):
        wait = _MAX_WAIT_SECONDS
        if request.HasField("timeout"):
            wait = min(wait, request.timeout.seconds + request.timeout.nanos / 1e9)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - 0.5))
        return self.store.operations.wait(request.name, wait)


_JOBS = {
    "CreateJob": w.CreateJobRequest,
    "GetJob": w.GetJobRequest,
    "ListJobs": w.ListJobsRequest,
    "UpdateJob": w.UpdateJobRequest,
    "DeleteJob": w.DeleteJobRequest,
    "RunJob": w.RunJobRequest,
}
_EXECUTIONS = {
    "GetExecution": w.GetExecutionRequest,
    "ListExecutions": w.ListExecutionsRequest,
    "DeleteExecution": w.DeleteExecutionRequest,
    "CancelExecution": w.CancelExecutionRequest,
}
_OPERATIONS = {
    "GetOperation": w.GetOperationRequest,
    "ListOperations": w.ListOperationsRequest,
    "DeleteOperation": w.DeleteOperationRequest,
    "WaitOperation": w.WaitOperationRequest,
}


def _unary(name: str, fn):
    def handler(request, context):
        try:
            return fn(request, context)
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        except Exception:
            log.exception("%s failed", name)
            context.abort(grpc.StatusCode.INTERNAL, f"{name} failed in the stand-in: see its log")

    return handler


def _handlers(service: JobsService, table: dict) -> dict:
    return {
        name: grpc.unary_unary_rpc_method_handler(
            _unary(name, getattr(service, name)),
            request_type.FromString,
            lambda response: response.SerializeToString(),
        )
        for name, request_type in table.items()
    }


def build_server(store: Store, host: str, port: int, workers: int = 16) -> tuple[grpc.Server, int]:
    """An unstarted gRPC server for store on host:port, and the port it bound."""
    service = JobsService(store)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobs-rpc"),
        # Never share a port with another server: a clash must fail loudly.
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Jobs", _handlers(service, _JOBS)
            ),
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Executions", _handlers(service, _EXECUTIONS)
            ),
            grpc.method_handlers_generic_handler(
                "google.longrunning.Operations", _handlers(service, _OPERATIONS)
            ),
        )
    )
    return server, server.add_insecure_port(f"{host}:{port}")
