"""bench/RESULTS.md from the runner's results: every scenario, its ratio to direct, the noise."""

from __future__ import annotations

from typing import Any

# Issue 6's targets: each scenario's req/s as a ratio to "direct" in the same run.
RATIO_TARGETS = {"proxied": 0.11, "memory-cache": 0.33, "redis-cache": 0.17, "streaming": 0.05}
ADDED_P50_TARGET_MS = 0.3
RSS_TARGET_MB = 80.0
READY_TARGET_S = 1.0
SMOKE_NOTE = ", **smoke mode: all scenarios at once, request counts capped; numbers mean nothing**"
CPU_NOTE = ("Turnout CPU per request: the user + system CPU time of the Turnout process during the "
            "measured runs divided by the requests served. It moves much less than req/s when "
            "other work shares the machine; 1,000,000 divided by it is the req/s one core could "
            "give.")


def measured(s: dict[str, Any]) -> tuple[str, bool]:
    """What the scenario really measured on this build, and whether that is what it is for."""
    probe = s["probe"]
    if any(code != 200 for code in probe["statuses"]) and s["expects"] != "failover":
        return f"probe answered {probe['statuses']}: not a valid measurement", False
    if s["expects"] == "cache-hit":
        if probe["cache"] == "hit":
            return "cache hits (`x-turnout-cache: hit`)", True
        return (f"**not cache hits**: this build answered `x-turnout-cache: {probe['cache']}`, "
                "so every request went upstream (no cache in this build)"), False
    if s["expects"] == "stream":
        if probe["content_type"] == "text/event-stream":
            return "SSE streams of 8 chunks", True
        return f"**not a stream**: answered {probe['content_type']}", False
    if s["expects"] == "failover":
        if s["status_errors"]:
            share = s["status_errors"] / max(1, s["requests"])
            return (f"**{s['status_errors']} error answers ({share:.0%})** reached clients: "
                    "this build does not retry the failing deployment"), False
        return "no failed call reached a client (retries and cooldown at work)", True
    return ("JSON answers" + (" from Turnout" if s["turnout"] else " from the fake upstream"),
            True)


def ratio_range(s: dict[str, Any], direct: dict[str, Any]) -> tuple[float, float, float]:
    """Mean ratio, and the lowest and highest per-repetition ratio (paired within each rep)."""
    pairs = [a / b for a, b in zip(s["rps"], direct["rps"], strict=False) if b]
    mean = s["rps_mean"] / direct["rps_mean"] if direct["rps_mean"] else 0.0
    return mean, min(pairs, default=0.0), max(pairs, default=0.0)


def render(results: dict[str, Any]) -> str:
    scenarios = {s["name"]: s for s in results["scenarios"]}
    direct = scenarios["direct"]
    m = results["machine"]
    st = results["settings"]
    lines = [
        "# Turnout benchmark results",
        "",
        "Written by `make bench` (`python -m bench.run`); see bench/README.md for the method",
        "and bench/PROFILE.md for where the time goes.",
        "",
        f"- date: {results['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
        f"Python {m['python']}",
        f"- pinning: {pin_text(results['pinned'])}",
        f"- runs: wrk, {st['connections']} connections (unless the scenario says 1), "
        f"{st['warmup']} s warm-up, then {st['reps']} interleaved repetitions of "
        f"{st['duration']} s" + (SMOKE_NOTE if st["smoke"] else ""),
        f"- load average before / after: {fmt_load(results['load_before'])} / "
        f"{fmt_load(results['load_after'])} (above ~0.5 the machine was busy with other work "
        "and the numbers are noisy)",
        "",
        "| scenario | what was measured | req/s | noise (CV, min-max) | ratio to direct "
        "(per-rep range) | p50 ms | p99 ms | errors | Turnout CPU per request |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for s in results["scenarios"]:
        what, _ = measured(s)
        mean, low, high = ratio_range(s, direct)
        lines.append(
            f"| {s['title']} | {what} | {s['rps_mean']:,.0f} | {s['rps_cv']:.1%}, "
            f"{min(s['rps']):,.0f}-{max(s['rps']):,.0f} | {mean:.3f} ({low:.3f}-{high:.3f}) | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['errors']} | {cpu_text(s)} |")
    lines += ["", CPU_NOTE, ""]
    lines += ["## Targets (issue 6)", ""]
    if st["smoke"]:
        lines.append("Not judged in smoke mode.")
    else:
        lines += ["| target | measured | met |", "| --- | --- | --- |"]
        lines += target_rows(results, scenarios, direct)
    lines += ["", "## Turnout processes", "",
              "| Turnout | cache backend | start to ready | RSS after the runs |",
              "| --- | --- | ---: | ---: |"]
    for name, t in results["turnouts"].items():
        lines.append(f"| {name} | {name} | {t['ready_seconds']:.2f} s | {t['rss_mb']:.1f} MB |")
    return "\n".join(lines) + "\n"


def target_rows(results: dict[str, Any], scenarios: dict[str, Any],
                direct: dict[str, Any]) -> list[str]:
    rows = []
    for name, target in RATIO_TARGETS.items():
        s = scenarios.get(name)
        if s is None:
            continue
        mean, _, _ = ratio_range(s, direct)
        _, valid = measured(s)
        met = ("yes" if mean >= target else "no") if valid else "not measured (see above)"
        rows.append(f"| {s['title']}: ratio >= {target} | {mean:.3f} | {met} |")
    one, proxied_one = scenarios.get("direct-1conn"), scenarios.get("proxied-1conn")
    if one and proxied_one:
        added = proxied_one["p50_ms"] - one["p50_ms"]
        rows.append(f"| p50 added at 1 connection <= {ADDED_P50_TARGET_MS} ms | {added:.3f} ms "
                    f"({proxied_one['p50_ms']:.3f} - {one['p50_ms']:.3f}) | "
                    f"{yes_no(added <= ADDED_P50_TARGET_MS)} |")
    for name, t in results["turnouts"].items():
        rows.append(f"| RSS <= {RSS_TARGET_MB:.0f} MB ({name} Turnout) | {t['rss_mb']:.1f} MB | "
                    f"{yes_no(t['rss_mb'] <= RSS_TARGET_MB)} |")
        ready = t["ready_seconds"]
        rows.append(f"| ready <= {READY_TARGET_S:.0f} s after start ({name} Turnout) | "
                    f"{ready:.2f} s | {yes_no(ready <= READY_TARGET_S)} |")
    return rows


def cpu_text(s: dict[str, Any]) -> str:
    cpu = s["cpu_us_per_request"]
    return "-" if cpu is None else f"{cpu:,.0f} µs"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


def pin_text(pinned: bool) -> str:
    if pinned:
        return ("Turnout (one worker) on core 0; fake upstream, redis-server and wrk (one "
                "thread) on core 1")
    return "none (fewer than 2 cores or no taskset): numbers are not comparable to pinned runs"


def fmt_load(load: list[float] | tuple[float, ...]) -> str:
    return f"{load[0]:.2f}"
