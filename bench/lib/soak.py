#!/usr/bin/env python3
"""bench/soak.sh's report: samples -> soak.json, soak.png and a markdown section.

    soak.py --samples S.jsonl --pg-samples P.tsv --summary SUM.json --warmup SECS
            --json OUT.json --png OUT.png [--png-link soak.png] [--pool N]
            [--meta KEY=VALUE]... [--smoke]
    soak.py rerender --from-json soak.json [--png-link soak.png]   (markdown only)

The markdown goes to stdout (bench/soak.sh hands it to
tests/reliability/section.sh). Exit status: 0 passed, 1 failed (any error;
the full run also when RSS or the connection count is not flat), 2+ the
report itself broke.

"Flat": after the warm-up, the soak's samples are cut into thirds; a series
is flat when the median of the last third is within FLAT_PCT % of the median
of the first third (connections: within max(1, FLAT_PCT %) connections).
"""
import json
import statistics
import sys

FLAT_PCT = 10.0


def parse(argv):
    a = {"meta": {}, "smoke": False, "png_link": "soak.png", "pool": None}
    it = iter(argv)
    for k in it:
        if k == "--smoke":
            a["smoke"] = True
        elif k == "--meta":
            key, _, v = next(it).partition("=")
            a["meta"][key] = v
        elif k.startswith("--"):
            a[k[2:].replace("-", "_")] = next(it)
        else:
            a.setdefault("cmd", k)
    return a


def load_samples(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def load_pg(path):
    out = []
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 5:
                continue
            try:
                out.append({"ts": float(p[0]), "client": int(p[1]), "gateway": int(p[2]),
                            "all": int(p[3]), "fds": int(p[4])})
            except ValueError:
                continue
    return out


def thirds_check(ts, vals, warmup, absolute_min=0.0):
    """First-third vs last-third medians after the warm-up."""
    pts = [(t, v) for t, v in zip(ts, vals) if v is not None and t >= warmup]
    if len(pts) < 3:
        return {"verdict": "too few samples", "flat": None, "samples": len(pts)}
    n = len(pts)
    k = n // 3
    first = [v for _, v in pts[:k]]
    last = [v for _, v in pts[n - k:]]
    m1, m3 = statistics.median(first), statistics.median(last)
    change = m3 - m1
    pct = (change / m1 * 100.0) if m1 else (0.0 if change == 0 else float("inf"))
    limit = max(absolute_min, abs(m1) * FLAT_PCT / 100.0)
    flat = abs(change) <= limit
    # least-squares slope over the whole window after warm-up, per minute
    xs = [t for t, _ in pts]
    ys = [v for _, v in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 60.0) if sxx else 0.0
    return {
        "samples": n, "per_third": k,
        "first_third_median": m1, "last_third_median": m3,
        "change": change, "change_pct": round(pct, 2) if pct != float("inf") else None,
        "limit": limit, "flat": flat, "verdict": "flat" if flat else "NOT flat",
        "min": min(ys), "max": max(ys), "slope_per_min": slope,
        "window_s": [round(xs[0], 1), round(xs[-1], 1)],
    }


def analyse(a):
    samples = load_samples(a["samples"])
    pg = load_pg(a["pg_samples"])
    summary = json.load(open(a["summary"]))
    warmup = float(a["warmup"])
    soak = [s for s in samples if s["phase"] == "soak"]
    start_ts = soak[0]["ts"] - soak[0]["t"] if soak else (samples[-1]["ts"] if samples else 0)
    # capacity samples get their time before the soak (negative)
    for s in samples:
        s["t"] = round(s["ts"] - start_ts, 2)
    for p in pg:
        p["t"] = p["ts"] - start_ts
    duration = float(summary["soak"]["duration_s"])
    pg_soak = [p for p in pg if 0 <= p["t"] <= duration + 1]
    rss_t = [s["t"] for s in soak if s.get("rss_kib")]
    rss_v = [s["rss_kib"] / 1024.0 for s in soak if s.get("rss_kib")]
    # the first sample of the soak is its start (zero-length window) and the
    # last one covers the drain after the last request was sent: no rate
    rate_pts = soak[1:-1]
    lat_pts = [x for x in rate_pts if x.get("p50_ms") is not None]
    flat = {
        "rss_mib": thirds_check(rss_t, rss_v, warmup),
        "pg_connections": thirds_check([p["t"] for p in pg_soak], [p["all"] for p in pg_soak], warmup, 1.0),
        "gateway_connections": thirds_check([p["t"] for p in pg_soak], [p["gateway"] for p in pg_soak], warmup, 1.0),
        "gateway_open_files": thirds_check([p["t"] for p in pg_soak], [p["fds"] for p in pg_soak], warmup, 2.0),
        "rate": thirds_check([s["t"] for s in rate_pts], [s["rate"] for s in rate_pts], warmup),
        "p50_ms": thirds_check([s["t"] for s in lat_pts], [s["p50_ms"] for s in lat_pts], warmup),
    }
    latency = {
        "median_window_p50_ms": statistics.median(x["p50_ms"] for x in lat_pts) if lat_pts else None,
        "median_window_p99_ms": statistics.median(x["p99_ms"] for x in lat_pts) if lat_pts else None,
        "max_window_p99_ms": max((x["p99_ms"] for x in lat_pts), default=None),
        "windows": len(lat_pts),
        "windows_p99_over_1s": sum(1 for x in lat_pts if x["p99_ms"] > 1000),
        "max_waiting": max((x["inflight"] for x in soak), default=None),
    }
    # Is a slow window the gateway's doing or the machine's? CPU per window.
    def others(x):
        return (x.get("cpu") or {}).get("others_pct_of_one_core")
    slow = [others(x) for x in lat_pts if x["p99_ms"] > 1000 and others(x) is not None]
    fast = [others(x) for x in lat_pts if x["p99_ms"] <= 1000 and others(x) is not None]
    latency["others_cpu_median_slow_windows"] = statistics.median(slow) if slow else None
    latency["others_cpu_median_other_windows"] = statistics.median(fast) if fast else None
    latency["rate_min_slow_windows"] = min((x["rate"] for x in lat_pts if x["p99_ms"] > 1000), default=None)
    sse = summary["sse"]
    cap = summary["capacity"]
    sk = summary["soak"]
    errors = {
        "capacity_errors": cap["errors"],
        "soak_errors": sk["errors"],
        "stream_drops": sse["drops"],
        "events_out_of_order": sse["out_of_order"],
        "streams_not_connected_at_end": summary["streams"] - sse["connected_end"],
        "shed": sk["shed"],
        "unanswered": sk["unanswered"],
    }
    total_requests = cap["ok"] + cap["errors"] + sk["ok"] + sk["errors"]
    all_errors = summary["total_errors"] + sse["out_of_order"] + errors["streams_not_connected_at_end"] \
        + sk["shed"] + sk["unanswered"]
    problems = [f"{k} = {v}" for k, v in errors.items() if v]
    for key in JUDGED:
        if flat[key]["flat"] is False:
            problems.append(f"{key} not flat")
        elif flat[key]["flat"] is None and not a["smoke"]:
            problems.append(f"{key}: too few samples")
    # a smoke run is too short for memory to settle: it fails on errors only
    failing = [p for p in problems if not a["smoke"] or "flat" not in p and "samples" not in p]
    return {
        "meta": a["meta"] | {"smoke": a["smoke"]},
        "passed": not failing,
        "problems": problems,
        "flat_rule": f"median of the last third of the samples after a {warmup:g} s warm-up within "
                     f"{FLAT_PCT:g} % of the median of the first third (connections: within "
                     f"max(1, {FLAT_PCT:g} %); open files: max(2, {FLAT_PCT:g} %))",
        "warmup_s": warmup,
        "pool_size": int(a["pool"]) if a.get("pool") else None,
        "summary": summary,
        "errors": errors,
        "total_requests": total_requests,
        "all_errors": all_errors,
        "error_rate": (all_errors / total_requests) if total_requests else None,
        "flatness": flat,
        "latency": latency,
        "samples": samples,
        "pg_samples": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()} for p in pg],
    }


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float) and x.is_integer() and nd <= 1 and abs(x) >= 10:
        x = int(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{nd}f}"


JUDGED = ("rss_mib", "pg_connections", "gateway_connections")


def row_verdict(key, x):
    if key in JUDGED or x["flat"]:
        return x["verdict"]
    return "rose" if x["change"] > 0 else "fell"


def slow_note(lt):
    if not lt.get("windows_p99_over_1s") or lt.get("others_cpu_median_slow_windows") is None:
        return ""
    return (f". In the windows with p99 over 1 s the 2xx rate fell to as low as "
            f"{fmt(lt.get('rate_min_slow_windows'), 0)}/s (a backlog, drained afterwards above the target rate), "
            f"and other processes on the machine used a median {fmt(lt['others_cpu_median_slow_windows'])} % of one "
            f"core, against {fmt(lt.get('others_cpu_median_other_windows'))} % in the other windows")


def markdown(r, png_link):
    s = r["summary"]
    sk, cap, sse, m = s["soak"], s["capacity"], s["sse"], r["meta"]
    f = r["flatness"]
    cpu = sk.get("cpu") or {}
    lines = []
    mins = sk["duration_s"] / 60.0
    title = f"Soak: {mins:g} minutes of mixed load at {sk['fraction']:g} × capacity"
    if m.get("smoke"):
        title += " (smoke run: too short to judge flatness)"
    lines.append(f"### {title}\n")
    verdict = "**Passed**" if r["passed"] else "**FAILED**"
    why = "" if not r["problems"] else " — " + "; ".join(r["problems"])
    rss = f["rss_mib"]
    conn = f["pg_connections"]
    lines.append(
        f"{verdict}{why}. {fmt(r['all_errors'])} errors in {fmt(r['total_requests'])} requests "
        f"(error rate {fmt((r['error_rate'] or 0) * 100, 3)} %); gateway RSS "
        f"{fmt((sk.get('rss_kib_start') or 0) / 1024)} → {fmt((sk.get('rss_kib_end') or 0) / 1024)} MiB "
        f"from start to end of the soak, {rss.get('verdict')} after warm-up "
        f"({fmt(rss.get('first_third_median'))} → {fmt(rss.get('last_third_median'))} MiB, "
        f"{fmt(rss.get('change_pct'), 2)} %); PostgreSQL connections "
        f"{fmt(conn.get('first_third_median'))} → {fmt(conn.get('last_third_median'))}, {conn.get('verdict')}.\n")
    lines.append(f"Run {m.get('date', '?')}, git {m.get('git', '?')}, `{m.get('command', 'bench/soak.sh')}`; "
                 f"{m.get('nproc', '?')} cores ({m.get('cpu_model', '?')}), {m.get('memory', '?')}, "
                 f"{m.get('pg_version', '?')}; gateway `{m.get('gateway', '?')}` with its embedded cluster, "
                 f"pool {r.get('pool_size') or '?'}, rate limit off.\n")
    others = cpu.get("others_pct_of_one_core")
    quiet = others is not None and others < 10
    note = (f"**The machine was {'quiet' if quiet else 'not quiet'}**: load average {m.get('loadavg_start', '?')} "
            f"at the start and {m.get('loadavg_end', '?')} at the end; over the soak the machine was "
            f"{fmt(cpu.get('machine_busy_pct'))} % busy (of {fmt(cpu.get('cores'))} cores), of which the gateway "
            f"{fmt(cpu.get('gateway_pct_of_one_core'))} %, PostgreSQL {fmt(cpu.get('postgres_pct_of_one_core'))} % "
            f"and the load client {fmt(cpu.get('client_pct_of_one_core'))} % of one core, and "
            f"**other processes {fmt(others)} % of one core**")
    note += "." if quiet else (" (other work on the machine shared its cores during the run, so the "
                               "capacity, and therefore the target rate, is lower than on a quiet machine).")
    lines.append(note + "\n")
    lines.append("| | |\n|---|---|")
    mix = s["mix"]
    lines.append(f"| load mix | {mix} (reads 60 %, writes 40 %); every request by a member of its thread "
                 f"(backend key + `X-User-ID`), over {s['threads']} threads of {s['members']} members from "
                 f"{s['users']} users (each user's inbox has ~{s['threads'] * s['members'] // max(s['users'], 1)} threads) |")
    lines.append(f"| live subscribers | {s['streams']} SSE streams open throughout: one member per thread "
                 f"(`/v1/threads/{{id}}/events`) and {s['global_streams']} of the whole feed as the service "
                 f"(`/v1/events`); {fmt(sse['events'])} events received, {sse['drops']} streams dropped, "
                 f"{sse['out_of_order']} events out of order, {sse['connected_end']} of {s['streams']} "
                 f"connected at the end |")
    lines.append(f"| capacity | **{fmt(cap['rate'], 0)} requests/s**: {cap['concurrency']} closed-loop clients, "
                 f"{fmt(cap['seconds'])} s, same mix and subscribers ({fmt(cap['ok'])} answered, "
                 f"{cap['errors']} errors) |")
    lines.append(f"| target rate | {sk['fraction']:g} × capacity = **{fmt(sk['target_rate'], 0)} requests/s**, "
                 f"open loop over at most {sk.get('connections', '?')} connections (a request due while all are busy "
                 f"waits; latency counts from when it was due); achieved {fmt(sk['achieved_rate'])} requests/s "
                 f"(between {fmt(f['rate'].get('min'))} and {fmt(f['rate'].get('max'))} in the {fmt(r.get('sample_s'))} s "
                 f"sample windows after warm-up) |")
    lines.append(f"| duration | {fmt(sk['duration_s'], 0)} s of soak after the capacity run; samples every "
                 f"{r.get('sample_s', '?')} s; first {r['warmup_s']:g} s are warm-up |")
    lines.append(f"| requests | {fmt(sk['scheduled'])} scheduled, {fmt(sk['ok'])} answered 2xx, "
                 f"**{fmt(sk['errors'])} errors**, {sk['shed']} shed (in-flight cap), {sk['unanswered']} "
                 f"unanswered at the end |")
    lt = r.get("latency") or {}
    lines.append(f"| latency (from when a request was due) | median of the per-window p50 "
                 f"{fmt(lt.get('median_window_p50_ms'), 2)} ms, of the per-window p99 "
                 f"{fmt(lt.get('median_window_p99_ms'), 2)} ms; worst window p99 {fmt(lt.get('max_window_p99_ms'), 0)} ms; "
                 f"{lt.get('windows_p99_over_1s', '?')} of {lt.get('windows', '?')} windows with p99 over 1 s; at most "
                 f"{fmt(lt.get('max_waiting'))} requests in flight or waiting for a connection{slow_note(lt)} |")
    lines.append(f"| error rate | {fmt(r['all_errors'])} / {fmt(r['total_requests'])} = "
                 f"{fmt((r['error_rate'] or 0) * 100, 3)} % (capacity run included; any non-2xx answer, "
                 f"transport error, dropped stream, shed or unanswered request counts) |")
    lines.append("")
    lines.append("Requests of the soak by kind (2xx / errors): " + ", ".join(
        f"{k} {fmt(v['ok'])}/{v['errors']}" for k, v in sk["per_op"].items()) + ".\n")
    lines.append(f"**Flatness** — rule: {r['flat_rule']}. Judged: gateway VmRSS and the connection counts; the other rows are reported only. "
                 f"The slope is a least-squares fit over the same window.\n")
    lines.append("| series | first third (median) | last third (median) | change | limit | min | max | slope | verdict |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    names = [("rss_mib", "gateway VmRSS, MiB", 1), ("pg_connections", "PostgreSQL backends (pg_stat_activity, its own background processes included)", 1),
             ("gateway_connections", "…of which the gateway's pool (application_name)", 1),
             ("gateway_open_files", "gateway open files (sockets included; not judged)", 1),
             ("rate", "request rate, 2xx/s (not judged)", 1), ("p50_ms", "latency p50 per window, ms (not judged)", 1)]
    for key, label, nd in names:
        x = f.get(key)
        if x is None:
            continue
        if x.get("flat") is None:
            lines.append(f"| {label} | | | | | | | | {x.get('verdict')} |")
            continue
        lines.append(f"| {label} | {fmt(x['first_third_median'], nd)} | {fmt(x['last_third_median'], nd)} | "
                     f"{x['change']:+.1f} ({fmt(x['change_pct'], 2)} %) | ±{fmt(x['limit'], nd)} | "
                     f"{fmt(x['min'], nd)} | {fmt(x['max'], nd)} | {x['slope_per_min']:+.3f}/min | "
                     f"{row_verdict(key, x)} |")
    lines.append("")
    lines.append(f"![gateway RSS, PostgreSQL connections, request rate, latency and CPU over the soak]({png_link})\n")
    if s.get("first_errors"):
        lines.append("First errors: " + "; ".join(f"`{e[:160]}`" for e in s["first_errors"][:5]) + "\n")
    lines.append("**Re-run**: `bash bench/soak.sh` (about 12 minutes; `--minutes N` for another length) prints "
                 "this section and writes `bench/soak.json` and `docs/soak.png`; "
                 "`RELIABILITY_DOC=1 bash bench/soak.sh` also replaces this section. "
                 "`bash bench/soak.sh --smoke` (≈30 s, part of the test command) fails on any error. "
                 "Method: `bench/soak.sh` starts the release gateway on its embedded cluster and the load "
                 "client `soak-load` (bench/sse-load); the client samples the gateway's VmRSS "
                 "(/proc/PID/status) and the request counters, the script samples pg_stat_activity and the "
                 "gateway's open files, `bench/lib/soak.py` judges and plots.")
    return "\n".join(lines) + "\n"


def plot(r, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = r["samples"]
    pg = r["pg_samples"]
    sk = r["summary"]["soak"]
    fig, ax = plt.subplots(5, 1, figsize=(10, 13), sharex=True)
    ts = [s["t"] for s in samples if s.get("rss_kib")]
    ax[0].plot(ts, [s["rss_kib"] / 1024 for s in samples if s.get("rss_kib")], color="tab:blue")
    ax[0].set_ylabel("gateway VmRSS (MiB)")
    ax[0].set_ylim(bottom=0)
    ax[1].plot([p["t"] for p in pg], [p["all"] for p in pg], label="all backends", color="tab:green")
    ax[1].plot([p["t"] for p in pg], [p["gateway"] for p in pg], label="gateway's", color="tab:olive",
               linestyle="--")
    ax[1].set_ylabel("PostgreSQL connections")
    ax[1].set_ylim(bottom=0, top=max([p["all"] for p in pg] + [1]) * 1.3)
    ax[1].legend(loc="lower right", fontsize=8)
    # rates of full windows only: not the short ones closing each phase
    last = {}
    for i, s in enumerate(samples):
        last[s["phase"]] = i
    rs = [s for i, s in enumerate(samples) if (s["ok"] or s["err"]) and i not in last.values()]
    for phase, label in (("capacity", None), ("soak", "2xx answers/s")):
        ps = [s for s in rs if s["phase"] == phase]
        ax[2].plot([s["t"] for s in ps], [s["rate"] for s in ps], color="tab:purple", label=label)
    ax[2].axhline(sk["target_rate"], color="grey", linestyle=":", label=f"target {sk['target_rate']:.0f}/s")
    errs = [s for s in samples if s["err"]]
    if errs:
        ax[2].scatter([s["t"] for s in errs], [s["err"] for s in errs], color="red", label="errors", zorder=3)
    ax[2].set_ylabel("requests/s")
    ax[2].set_ylim(bottom=0)
    ax[2].legend(loc="lower right", fontsize=8)
    ls = [s for s in rs if s.get("p50_ms") is not None]
    for phase in ("capacity", "soak"):
        ps = [s for s in ls if s["phase"] == phase]
        ax[3].plot([s["t"] for s in ps], [s["p50_ms"] for s in ps], color="tab:cyan",
                   label="p50" if phase == "soak" else None)
        ax[3].plot([s["t"] for s in ps], [s["p99_ms"] for s in ps], color="tab:red",
                   label="p99" if phase == "soak" else None)
    ax[3].set_yscale("log")
    ax[3].set_ylabel("latency per window (ms)")
    ax[3].legend(loc="upper right", fontsize=8)
    cs = [s for s in rs if s.get("cpu")]
    for key, label, color in (("others_pct_of_one_core", "other processes", "tab:gray"),
                              ("postgres_pct_of_one_core", "PostgreSQL", "tab:green"),
                              ("gateway_pct_of_one_core", "gateway", "tab:blue"),
                              ("client_pct_of_one_core", "load client", "tab:purple")):
        for phase in ("capacity", "soak"):
            ps = [s for s in cs if s["phase"] == phase]
            ax[4].plot([s["t"] for s in ps], [s["cpu"][key] for s in ps], color=color,
                       label=label if phase == "soak" else None)
    ax[4].set_ylabel("CPU (% of one core)")
    ax[4].set_ylim(0, max([s["cpu"][k] for s in cs for k in ("others_pct_of_one_core", "postgres_pct_of_one_core")]
                          + [10]) * 1.3)
    ax[4].legend(loc="upper right", fontsize=8, ncol=4)
    ax[4].set_xlabel("seconds since the soak started (negative: capacity run)")
    w = r["warmup_s"]
    for a_ in ax:
        a_.axvspan(-r["summary"]["capacity"]["seconds"] - 2, -2, color="orange", alpha=0.12)
        a_.axvspan(0, w, color="grey", alpha=0.10)
        a_.grid(alpha=0.3)
    ax[0].text(0.005, 0.04, "capacity run (orange), warm-up (grey)", transform=ax[0].transAxes, fontsize=8)
    fig.suptitle(f"Soak: {sk['duration_s'] / 60:g} min at {sk['target_rate']:.0f} requests/s "
                 f"({sk['fraction']:g} × capacity {r['summary']['capacity']['rate']:.0f}/s), "
                 f"{r['summary']['streams']} SSE streams, {r['all_errors']} errors")
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main():
    a = parse(sys.argv[1:])
    if a.get("cmd") == "rerender":
        r = json.load(open(a["from_json"]))
        sys.stdout.write(markdown(r, a["png_link"]))
        return 0
    r = analyse(a)
    r["sample_s"] = float(a.get("sample_every", 0)) or None
    soak = [s for s in r["samples"] if s["phase"] == "soak"]
    if len(soak) > 2:
        r["sample_s"] = round(statistics.median(b["t"] - x["t"] for x, b in zip(soak[1:], soak[2:])), 1)
    with open(a["json"], "w") as f:
        json.dump(r, f, indent=1, sort_keys=True)
        f.write("\n")
    plot_ok = True
    try:
        plot(r, a["png"])
    except Exception as e:  # noqa: BLE001 -- a missing plot is reported, not hidden
        print(f"soak.py: no plot: {e}", file=sys.stderr)
        plot_ok = False
    sys.stdout.write(markdown(r, a["png_link"]))
    for p in r["problems"]:
        print(f"soak.py: {p}", file=sys.stderr)
    if not plot_ok:
        return 3
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
