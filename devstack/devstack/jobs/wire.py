"""The raw protobuf classes of google-cloud-run's generated code, and the errors RPCs answer."""

from __future__ import annotations

import grpc
from google.cloud.run_v2.types import condition as _condition
from google.cloud.run_v2.types import execution as _execution
from google.cloud.run_v2.types import job as _job
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2

from devstack.grpc_errors import ApiError as ApiError
from devstack.grpc_errors import invalid as invalid

Job = _job.Job.pb()
ExecutionReference = _job.ExecutionReference.pb()
CreateJobRequest = _job.CreateJobRequest.pb()
GetJobRequest = _job.GetJobRequest.pb()
UpdateJobRequest = _job.UpdateJobRequest.pb()
ListJobsRequest = _job.ListJobsRequest.pb()
ListJobsResponse = _job.ListJobsResponse.pb()
DeleteJobRequest = _job.DeleteJobRequest.pb()
RunJobRequest = _job.RunJobRequest.pb()

Execution = _execution.Execution.pb()
GetExecutionRequest = _execution.GetExecutionRequest.pb()
ListExecutionsRequest = _execution.ListExecutionsRequest.pb()
ListExecutionsResponse = _execution.ListExecutionsResponse.pb()
DeleteExecutionRequest = _execution.DeleteExecutionRequest.pb()
CancelExecutionRequest = _execution.CancelExecutionRequest.pb()

Condition = _condition.Condition.pb()
State = _condition.Condition.State
ExecutionReason = _condition.Condition.ExecutionReason
Severity = _condition.Condition.Severity
CompletionStatus = _job.ExecutionReference.CompletionStatus

Operation = operations_pb2.Operation
GetOperationRequest = operations_pb2.GetOperationRequest
ListOperationsRequest = operations_pb2.ListOperationsRequest
ListOperationsResponse = operations_pb2.ListOperationsResponse
DeleteOperationRequest = operations_pb2.DeleteOperationRequest
WaitOperationRequest = operations_pb2.WaitOperationRequest


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of a time.time() value."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def not_found(kind: str, name: str) -> ApiError:
    """NOT_FOUND for a resource of kind (job, execution, operation) named name."""
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{kind} {name!r} was not found")


def unsupported(message: str) -> ApiError:
    """UNIMPLEMENTED: valid on Cloud Run, but beyond what the local stand-in can run."""
    return ApiError(
        grpc.StatusCode.UNIMPLEMENTED, f"{message} (not supported by the local stand-in)"
    )
