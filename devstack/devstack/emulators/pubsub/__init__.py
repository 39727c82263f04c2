"""A pure-Python Pub/Sub emulator: google.pubsub.v1 Publisher and Subscriber over gRPC.

A fallback for machines without Java or gcloud, proven against Google's emulator by
tests/conformance. `python -m devstack.emulators.pubsub --host H --port P [--data-dir D]`
runs it; `--data-dir` keeps topics, subscriptions and unacknowledged messages across restarts.
"""
