"""A local stand-in for the Cloud Run Admin API v2's jobs: google.cloud.run.v2.Jobs and
Executions, and google.longrunning.Operations, over insecure gRPC.

The dispatcher's code runs unchanged against it, as Pub/Sub clients do against an emulator:
RunJob (with overrides) starts an execution whose tasks are local processes (by default
`python -m taskctl worker` with this interpreter) with CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION,
CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_COUNT and CLOUD_RUN_TASK_ATTEMPT set; parallelism,
the task timeout (SIGTERM, then SIGKILL after the grace) and retries are honoured, and
GetExecution / ListExecutions report them as Cloud Run does. `python -m devstack.jobs
--host H --port P --work-dir D` runs it; `devstack.emulators.start_jobs_standin` starts it
as a child process. Stopping it stops every process it started.
"""
