"""Fault-injection machinery for a seeded fault campaign (local only, never in an image).

Three pieces, each usable alone:

- `chaos.proxy.FaultProxy`: a TCP proxy in front of an emulator (Pub/Sub over gRPC, GCS
  over HTTP/1.1) that refuses, blackholes, delays or resets connections on demand.
- `chaos.processes.ExecutionRunner`: worker executions (`python -m taskctl worker`) as
  subprocesses, 1-3 at once and started again as they end, that it SIGKILLs, SIGTERMs or
  memory-limit kills on demand, recording how every execution ended.
- `chaos.faults`: a schedule of proxy, process and operator faults drawn from one seed
  (same seed, same schedule), and `FaultInjector`, which plays it against the proxies, the
  runner and the campaign's operator actions and reports what it injected by kind.
"""
