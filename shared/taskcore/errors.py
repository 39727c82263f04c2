"""One rooted error tree for the whole pipeline (after dramatiq's errors.py)."""

from __future__ import annotations


class TaskPipelineError(Exception):
    """Raised when anything in the pipeline fails; the root of every error below."""


class ConfigurationError(TaskPipelineError):
    """Raised when settings read from the environment are missing or malformed."""


class TaskModuleError(ConfigurationError):
    """Raised when a module named in TASK_MODULES cannot be imported or declares no task type."""


class TaskError(TaskPipelineError):
    """Raised when a task cannot be processed; the worker decides by subclass what happens next."""

    error_type = "task_error"


class PermanentTaskError(TaskError):
    """Raised when retrying a task can never succeed; it is dead-lettered at once."""

    error_type = "permanent"


class InvalidTaskError(PermanentTaskError):
    """Raised when a message body is not a valid task envelope for a known task type."""

    error_type = "invalid_task"

    def __init__(self, message: str, *, error_type: str | None = None, details=None) -> None:
        super().__init__(message)
        if error_type:
            self.error_type = error_type
        self.details = details or []


class MissingInputError(PermanentTaskError):
    """Raised when a task names an input object that does not exist in the bucket."""

    error_type = "missing_input"


class InputNotAllowedError(PermanentTaskError):
    """Raised when a task names an input outside the bucket or the allowed input prefixes."""

    error_type = "input_not_allowed"


class InputTooLargeError(PermanentTaskError):
    """Raised when a task's input object is larger than MAX_INPUT_BYTES."""

    error_type = "input_too_large"


class OutputConflictError(PermanentTaskError):
    """Raised when a run writes an output name twice, or a name that is not a safe object name."""

    error_type = "output_conflict"


class TransientTaskError(TaskError):
    """Raised when a task failed for a reason that may pass; the message is retried with backoff."""

    error_type = "transient"


class TaskTimeoutError(TransientTaskError):
    """Raised when a task ran past its time limit."""

    error_type = "timeout"


class InfrastructureError(TaskPipelineError):
    """Raised when Pub/Sub or Cloud Storage stays unreachable past retries."""


class PublishError(InfrastructureError):
    """Raised when a message could not be published (topic missing, emulator or service down)."""


class PublishOutcomeUnknown(PublishError):
    """Raised when a publish timed out or broke off so that Pub/Sub may or may not have it."""


class StatusConflictError(TaskPipelineError):
    """Raised when a task's status record keeps changing under our conditional writes."""


class InvalidTransitionError(TaskPipelineError):
    """Raised when code asks a status record to move between states that may not follow."""


class EmulatorError(TaskPipelineError):
    """Raised when a local emulator cannot be found or started."""


class ApiRequestError(TaskPipelineError):
    """Raised when the submit API refuses a request; carries its HTTP status, error code and details."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "bad_request", details=None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or []


# --- what TaskClient raises (the API answered, or could not be reached) -------------------


class TaskApiError(TaskPipelineError):
    """Raised when the task API refuses or fails a client's request; .status, .code, .details."""

    def __init__(self, message: str, *, status: int, code: str, details=None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or []
        self.retry_after: float | None = None


class TaskRejectedError(TaskApiError):
    """Raised when the API refuses a task or request as invalid (400, 413, 415, 422)."""


class TaskApiAuthError(TaskApiError):
    """Raised when the API key or identity token is missing or not accepted (401, 403)."""


class TaskNotFoundError(TaskApiError):
    """Raised when no task (or output) of that id is known (404)."""


class TaskConflictError(TaskApiError):
    """Raised when the request conflicts with the task's state, e.g. cancelling a finished one."""


class TaskApiUnavailableError(TaskApiError):
    """Raised when the API stays unreachable or busy (5xx, 429) through every retry."""


class TaskWaitTimeoutError(TaskApiError):
    """Raised when TaskClient.wait runs out of time before the task finishes."""
