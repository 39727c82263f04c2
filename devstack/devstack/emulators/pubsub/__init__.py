"""A pure-Python Pub/Sub emulator: google.pubsub.v1 Publisher and Subscriber, snapshots and
google.iam.v1.IAMPolicy (policies kept, never enforced) over gRPC.

A fallback for machines without Java or gcloud, proven against Google's emulator by
tests/conformance and against google-cloud-pubsub's own system tests by
`make pubsub-system-tests`. `python -m devstack.emulators.pubsub --host H --port P
[--data-dir D]` runs it; `--data-dir` keeps topics, subscriptions, snapshots, IAM policies and
unacknowledged messages across restarts.
"""
