#!/usr/bin/env python3
"""Helpers for compare.sh.

  report.py events WORKLOAD N                 print N input lines for `ors run`
  report.py check-run WORKLOAD N OUT RATE...  check an `ors run` output, print its result line
  report.py summarize RAW.jsonl OUTDIR        table on stdout; results.json, results.md, chart.svg
"""
import json
import statistics
import sys

NAMES = {"ping-pong": ["t"], "ping-pong-data": ["t"], "deep-wide": ["e0", "e1", "e2", "e3"]}


def events(workload, n):
    names = NAMES[workload]
    n = int(n)
    if workload == "deep-wide":
        n -= n % 4
    for i in range(n):
        print(json.dumps({"name": names[i % len(names)]}))


def check_run(workload, n, out_path, rates):
    n = int(n)
    if workload == "deep-wide":
        n -= n % 4
    with open(out_path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    if len(lines) != n + 1:
        sys.exit(f"ors run {workload}: {len(lines)} output lines, expected {n + 1}")
    last = lines[-1]
    if workload == "deep-wide":
        expected = ["r0_x", "r1_x", "r2_x", "r3_x"]
        ok = last["atomic"] == expected
    else:
        expected = ["a"] if n % 2 == 0 else ["b"]
        ok = last["atomic"] == expected
    if not ok:
        sys.exit(f"ors run {workload}: ended in {last['atomic']}, expected {expected}")
    rates = sorted(float(r) for r in rates)
    print(json.dumps({
        "engine": "ors",
        "mode": "ors run",
        "workload": workload,
        "unit": "events/s",
        "check": f"{n + 1} output lines, atomic {expected} at the end",
        "result": {"min": rates[0], "median": statistics.median(rates), "max": rates[-1], "rounds": rates},
    }))


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.1f}"


def summarize(raw_path, out_dir):
    with open(raw_path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    order = ["ping-pong", "ping-pong-data", "deep-wide", "load-1000", "start-sessions"]
    engines = [("ors", "in-process"), ("ors", "ors run"), ("scion", "in-process"), ("qt", "in-process")]
    by = {(r["workload"], r["engine"], r["mode"]): r for r in rows}
    table = []
    for w in order:
        base = by.get((w, "ors", "in-process"))
        for e, m in engines:
            r = by.get((w, e, m))
            if not r:
                continue
            res = r["result"]
            entry = {
                "workload": w, "engine": e, "mode": m, "unit": r["unit"],
                "min": res["min"], "median": res["median"], "max": res["max"],
                "check": r["check"],
            }
            if "rss_per_live_session_kib" in r:
                entry["rss_per_live_session_kib"] = r["rss_per_live_session_kib"]
            if e != "ors" and base:
                entry["ors_over_peer"] = base["result"]["median"] / res["median"]
            table.append(entry)
    header = f"{'workload':<16} {'engine':<6} {'mode':<10} {'min':>10} {'median':>10} {'max':>10} {'unit':<9} {'ors/peer':>9} {'KiB/session':>11}"
    print(header)
    print("-" * len(header))
    for t in table:
        ratio = f"{t['ors_over_peer']:.1f}x" if "ors_over_peer" in t else ""
        mem = f"{t['rss_per_live_session_kib']:.1f}" if "rss_per_live_session_kib" in t else ""
        print(f"{t['workload']:<16} {t['engine']:<6} {t['mode']:<10} {fmt(t['min']):>10} {fmt(t['median']):>10} {fmt(t['max']):>10} {t['unit']:<9} {ratio:>9} {mem:>11}")
    with open(f"{out_dir}/results.json", "w") as f:
        json.dump({"rows": table}, f, indent=2)
    with open(f"{out_dir}/results.md", "w") as f:
        f.write("| workload | engine | mode | min | median | max | unit | ors / peer (median) | KiB per live session |\n")
        f.write("|---|---|---|---:|---:|---:|---|---:|---:|\n")
        for t in table:
            ratio = f"{t['ors_over_peer']:.1f}x" if "ors_over_peer" in t else ""
            mem = f"{t['rss_per_live_session_kib']:.1f}" if "rss_per_live_session_kib" in t else ""
            f.write(f"| {t['workload']} | {t['engine']} | {t['mode']} | {fmt(t['min'])} | {fmt(t['median'])} | {fmt(t['max'])} | {t['unit']} | {ratio} | {mem} |\n")
    write_svg(table, order, f"{out_dir}/chart.svg")


def write_svg(table, order, path):
    """Grouped bars per workload, each bar the median relative to the
    fastest engine of that workload (labels carry the absolute figure)."""
    colors = {("ors", "in-process"): "#1f77b4", ("ors", "ors run"): "#6baed6",
              ("scion", "in-process"): "#ff7f0e", ("qt", "in-process"): "#2ca02c"}
    width, group_h, bar_h, left = 900, 110, 20, 170
    workloads = [w for w in order if any(t["workload"] == w for t in table)]
    height = 60 + group_h * len(workloads)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<text x="10" y="20" font-size="15">ors vs SCION vs Qt SCXML (median, longer is better; bar = share of the fastest)</text>']
    y = 40
    for w in workloads:
        rows = [t for t in table if t["workload"] == w]
        best = max(t["median"] for t in rows)
        parts.append(f'<text x="10" y="{y + 14}" font-weight="bold">{w}</text>')
        for i, t in enumerate(rows):
            by = y + i * (bar_h + 4)
            length = (width - left - 160) * t["median"] / best
            color = colors.get((t["engine"], t["mode"]), "#999")
            parts.append(f'<rect x="{left}" y="{by}" width="{length:.1f}" height="{bar_h}" fill="{color}"/>')
            label = f'{t["engine"]} {t["mode"]}: {fmt(t["median"])} {t["unit"]}'
            parts.append(f'<text x="{left + length + 6:.1f}" y="{by + 14}">{label}</text>')
        y += group_h
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    cmd = sys.argv[1]
    if cmd == "events":
        events(sys.argv[2], sys.argv[3])
    elif cmd == "check-run":
        check_run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif cmd == "summarize":
        summarize(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


main()
