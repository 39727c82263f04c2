"""Constants the stand-in and the code that starts it share (this module imports nothing)."""

# What a client sets to reach the stand-in, as PUBSUB_EMULATOR_HOST reaches Pub/Sub's.
HOST_ENV = "CLOUD_RUN_EMULATOR_HOST"
# Cloud Run's time between SIGTERM and SIGKILL for a task past its timeout or cancelled.
CLOUD_RUN_TERM_GRACE = 10.0
