"""Dead letters for operators: browse, show, replay and purge the DLQ subscription.

- `letters`: a dead letter and what it says (task, reason, attempts, when), filters;
- `scan`: browsing without consuming (every message is held, then handed back);
- `replay`: republishing to the task topic, acked in the DLQ only once confirmed;
- `purge`: removing, optionally archiving first;
- `audit`: who did what, archives and audit records in the bucket;
- `cli`: `taskctl dlq`. The admin API (task_api.routes.admin) uses the same functions.

Nothing is imported here, so `taskctl --help` stays fast.
"""
