"""taskctl: the command line of the pipeline, on top of the API, the worker and the shared package.

Nothing imports this package. `taskctl.main` holds the command group; each command module
imports what it runs only when it runs, so `taskctl --help` stays fast.
"""
