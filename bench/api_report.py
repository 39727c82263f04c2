"""bench/api.py's report: the summary table and the latency-over-time plot."""

from __future__ import annotations

from pathlib import Path

TARGET_P99_MS = 60.0


def plot(result: dict, path: Path) -> None:
    """Per-second p50/p99 latency and API RSS over the sustained run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    seconds = [t["second"] for t in timeline]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(seconds, [t["p50_ms"] for t in timeline], label="p50")
    ax.plot(seconds, [t["p99_ms"] for t in timeline], label="p99")
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label="p99 target")
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    memory = ax.twinx()
    memory.plot(*zip(*result["rss"], strict=True), color="tab:green", alpha=0.6, label="API RSS")
    memory.set_ylabel("API RSS (MiB)")
    # Headroom above the RSS line keeps it clear of the legend.
    memory.set_ylim(0, max(r for _, r in result["rss"]) * 1.6)
    lines = ax.get_legend_handles_labels()
    more = memory.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", ncols=4)
    ax.set_ylim(0, max(TARGET_P99_MS, *(t["p99_ms"] for t in timeline)) * 1.25)
    ax.set_title(
        f"POST /submit-task, open loop at {result['rate']:.0f} req/s (auth and status records on)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(report: dict) -> str:
    """The summary as a fixed-width table."""
    rows = [("scenario", "req/s", "p50 ms", "p99 ms", "errors", "API CPU ms/req")]
    for name in ("status_on", "status_off"):
        m = report["closed_loop"][name]["median"]
        label = f"closed c={report['concurrency']}, status {name.split('_')[1]}"
        rows.append(
            (
                label,
                f"{m['rps']:.0f}",
                f"{m['p50_ms']:.1f}",
                f"{m['p99_ms']:.1f}",
                f"{m['errors']:.0f}",
                f"{m['api_cpu_ms_per_request']:.2f}",
            )
        )
    if "sustained" in report:
        s = report["sustained"]
        rows.append(
            (
                f"open {s['rate']:.0f} req/s x {s['seconds']:.0f} s",
                f"{s['requests'] / s['seconds']:.0f}",
                f"{s['p50_ms']:.1f}",
                f"{s['p99_ms']:.1f}",
                str(s["errors"]),
                "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
