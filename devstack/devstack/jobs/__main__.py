"""`python -m devstack.jobs --host H --port P --work-dir D [--term-grace S]`."""

from devstack.jobs.cli import jobs_command

if __name__ == "__main__":
    jobs_command(prog_name="python -m devstack.jobs")
