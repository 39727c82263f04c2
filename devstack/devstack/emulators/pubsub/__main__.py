"""`python -m devstack.emulators.pubsub --host H --port P [--data-dir D]`."""

from devstack.emulators.pubsub.cli import pubsub_command

if __name__ == "__main__":
    pubsub_command(prog_name="python -m devstack.emulators.pubsub")
