"""The local stack: emulators for Pub/Sub and Cloud Storage, and `taskctl dev`.

Local use only. Production images do not ship this package (the Dockerfiles' build context
leaves devstack/ out), and its own dependencies come with the `local` extra.
"""
