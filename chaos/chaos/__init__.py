"""Fault-injection machinery for a seeded fault campaign (local only, never in an image).

The pieces, each usable alone:

- `chaos.proxy.FaultProxy`: a TCP proxy in front of an emulator (Pub/Sub over gRPC, GCS
  over HTTP/1.1) that refuses, blackholes, delays or resets connections on demand, on a
  thread of its own; `chaos.proxy_process.ProxyProcess` is the same in a child process,
  for a caller whose own threads would compete with it for the GIL.
- `chaos.processes.ExecutionRunner`: worker executions (`python -m taskctl worker`) as
  subprocesses, 1-3 at once and started again as they end, which it SIGKILLs, SIGTERMs or
  memory-limit kills on demand (`chaos.memory`: a memory cgroup, v1 or v2 as found by
  `chaos.cgroups`, or an RSS watchdog), recording how every execution ended
  (`chaos.executions.ExecutionRecord`).
- `chaos.faults`: a schedule of proxy, process and operator faults drawn from one seed
  (same seed, same schedule), and `FaultInjector`, which plays it against the proxies, the
  runner and the campaign's operator actions and reports what it injected by kind.
- `python -m chaos.throughput`: what the proxies cost, measured on the real emulators.

A campaign driver wires them together:

    with ProxyProcess(pubsub.env_value, name="pubsub") as pubsub_proxy, \\
         ProxyProcess(gcs.env_value, name="gcs") as gcs_proxy:
        proxied = settings.replace(
            pubsub_emulator_host=pubsub_proxy.address, storage_emulator_host=gcs_proxy.url
        )
        schedule = build_schedule(seed, ScheduleConfig(duration_seconds=600))
        with ExecutionRunner(proxied, parallelism=3, seed=seed) as runner:
            with FaultInjector(
                schedule,
                proxies={"pubsub": pubsub_proxy, "gcs": gcs_proxy},
                runner=runner,
                operator=my_operator,  # implements chaos.faults.OperatorActions
            ) as injector:
                ...  # submit tasks through the API for the schedule's duration
                injector.join()
            runner.finish(timeout=120)  # no new executions; the running ones must exit
        print(injector.report_text())   # faults by kind
        runner.records()                # every execution: how it ended, and when
"""
