#!/usr/bin/env python3
"""Medians of the fast-path benchmark's results (one JSON line per phase, from run.sh's
`--bench load` reports) as markdown tables.

    summary.py RESULTS.jsonl     # the tables
    summary.py --line            # one JSON line on stdin -> one human line (run.sh's progress)
"""
import collections
import json
import statistics
import sys


def server_cpu(line):
    """CPU µs per request of the engine's own processes: serve, plus workers if any."""
    processes = line.get("processes", {})
    return sum(processes.get(name, {}).get("cpu_us_per_req", 0.0) for name in ("serve", "workers"))


def service_cpu(line, name):
    return line.get("processes", {}).get(name, {}).get("cpu_us_per_req")


def human(line):
    check = line.get("check")
    verdict = "" if check is None else ("  check ok" if check.get("ok") else f"  CHECK FAILED {check}")
    return (f"{line['label']}: {line['per_s']:.0f}/s p50 {line['p50_ms']:.2f} ms "
            f"p99 {line['p99_ms']:.2f} ms, server CPU {server_cpu(line):.0f} µs/req, "
            f"generator {line['generator_cpu_us_per_req']:.0f} µs/req, "
            f"RSS {line['rss_mib']}/{line['hwm_mib']} MiB, "
            f"non-2xx {line['non_2xx_total']}, errors {line['errors_total']}{verdict}")


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"


def compact(lines):
    """One row per configuration: the floor, then runs/s and latency at each client count."""
    groups = collections.OrderedDict()
    for line in lines:
        key = (line.get("revision", "?"), line["config"], line["durability"])
        groups.setdefault(key, {}).setdefault(line["phase"], []).append(line)
    counts = sorted({l["clients"] for l in lines if l["phase"] != "floor"})
    header = ["revision", "config", "durability", "healthz req/s"]
    for count in counts:
        header += [f"{count} cl runs/s", f"{count} cl p50 / p99 ms", f"{count} cl CPU µs/run"]
    header += ["peak RSS MiB", "check"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (revision, config, durability), phases in groups.items():
        floor = phases.get("floor", [])
        row = [revision, config, durability, fmt(median(l["per_s"] for l in floor))]
        for count in counts:
            group = phases.get(f"c{count}", [])
            row += [fmt(median(l["per_s"] for l in group)),
                    f"{fmt(median(l['p50_ms'] for l in group), 1)} / {fmt(median(l['p99_ms'] for l in group), 1)}",
                    fmt(median(server_cpu(l) for l in group))]
        every = [l for group in phases.values() for l in group]
        checks = [l["check"] for l in every if l.get("check") is not None]
        row += [fmt(max((l["hwm_mib"] for l in every), default=None)),
                "ok" if checks and all(c.get("ok") for c in checks) else "FAILED" if checks else "–"]
        print("| " + " | ".join(row) + " |")


def tables(lines):
    compact(lines)
    revisions = sorted({line.get("revision", "?") for line in lines})
    print(f"\nRevision {', '.join(revisions)}; medians of the repeats. Every phase:\n")
    groups = collections.OrderedDict()
    for line in lines:
        key = (line.get("revision", "?"), line["config"], line["durability"], line["phase"])
        groups.setdefault(key, []).append(line)

    print("| revision | config | durability | phase | clients | req or runs/s | p50 ms | p90 ms | p99 ms "
          "| max ms | server CPU µs/run | generator CPU µs/req | postgres µs/run "
          "| rabbitmq µs/run | RSS / peak MiB | failures | check | repeats |")
    print("|" + "---|" * 18)
    for (revision, config, durability, phase), group in groups.items():
        checks = [line["check"] for line in group if line.get("check") is not None]
        check = "–" if not checks else (
            "ok" if all(c.get("ok") for c in checks) else
            f"{sum(not c.get('ok') for c in checks)} failed")
        failures = sum(line["non_2xx_total"] + line["errors_total"] for line in group)
        row = [
            revision, config, durability, "healthz" if phase == "floor" else "webhook",
            str(group[0]["clients"]),
            fmt(median(l["per_s"] for l in group)),
            fmt(median(l["p50_ms"] for l in group), 2),
            fmt(median(l["p90_ms"] for l in group), 2),
            fmt(median(l["p99_ms"] for l in group), 2),
            fmt(median(l["max_ms"] for l in group), 1),
            fmt(median(server_cpu(l) for l in group)),
            fmt(median(l["generator_cpu_us_per_req"] for l in group)),
            fmt(median(service_cpu(l, "postgres") for l in group)),
            fmt(median(service_cpu(l, "rabbitmq") for l in group)),
            f"{fmt(median(l['rss_mib'] for l in group))} / {fmt(median(l['hwm_mib'] for l in group))}",
            str(failures), check, str(len(group)),
        ]
        print("| " + " | ".join(row) + " |")


def main():
    if sys.argv[1:] == ["--line"]:
        print(human(json.loads(sys.stdin.read())))
        return
    with open(sys.argv[1]) as results:
        tables([json.loads(line) for line in results if line.strip()])


if __name__ == "__main__":
    main()
