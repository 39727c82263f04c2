"""The dispatcher: worker executions started on demand, sized by the backlog, and what must
happen later (delayed tasks, periodic tasks, wake-ups after a retry's backoff).

It runs in the API service: the API pokes it after accepting tasks (an execution starts
within seconds), and a tick (`POST /internal/tick`, Cloud Scheduler every minute on GCP; the
dev stack every second) publishes what came due and checks each queue. It starts executions
through the Cloud Run Admin API (`jobs.run` with overrides, google-cloud-run); locally the same
code talks to devstack's Cloud Run Jobs stand-in (CLOUD_RUN_EMULATOR_HOST), as the Google clients talk to
the emulators.

- `policy`: how many parallel tasks a queue should have for its backlog (pure);
- `jobs`: the Run Admin API: run a queue's job, count its running tasks;
- `periodic`: the firings of `@task(schedule=...)` types and their task ids;
- `service`: `Dispatcher` — poke, tick, fire — and the lease that keeps concurrent
  dispatchers (API instances, processes) from stacking executions.
"""
