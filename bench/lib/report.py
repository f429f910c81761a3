#!/usr/bin/env python3
"""Aggregation for bench/run.sh: turns raw pgbench/wrk output into records,
and records into results.json, RESULTS.md and results.png.

Subcommands (all append to / read from a JSON-lines file of records):
  pgbench  --jsonl F --scenario S --target T --clients N --prefix P --status ok|failed [--extra JSON]
  wrk      --jsonl F --scenario S --target T --clients N --result R --status ok|failed [--extra JSON]
  record   --jsonl F --json '{...}'
  report   --jsonl F --meta M --md OUT.md --json OUT.json [--png OUT.png]
  report   --from-json results.json --md OUT.md --json OUT.json [--png OUT.png]   (re-render)

Only the standard library, plus matplotlib for the plot.
"""
import argparse
import glob
import json
import math
import os
import re
import sys

# ---------------------------------------------------------------- helpers


def append(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def tail(path, n=6):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def base_record(a, status):
    rec = {"scenario": a.scenario, "target": a.target, "clients": a.clients, "status": status}
    if a.extra:
        rec.update(json.loads(a.extra))
    return rec


# ---------------------------------------------------------------- pgbench


def cmd_pgbench(a):
    rec = base_record(a, a.status)
    out = a.prefix + ".out"
    err = a.prefix + ".err"
    text = open(out, errors="replace").read() if os.path.exists(out) else ""
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    tps = float(m.group(1)) if m else None
    lat = []
    for f in glob.glob(a.prefix + ".[0-9]*"):
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 6 and parts[2].isdigit():
                    lat.append(int(parts[2]))
    lat.sort()
    failed = None
    m = re.search(r"number of failed transactions: (\d+)", text)
    if m:
        failed = int(m.group(1))
    rec.update(
        {
            "tool": "pgbench",
            "throughput": tps,
            "transactions": len(lat),
            "p50_ms": round(pct(lat, 50) / 1000, 3) if lat else None,
            "p90_ms": round(pct(lat, 90) / 1000, 3) if lat else None,
            "p99_ms": round(pct(lat, 99) / 1000, 3) if lat else None,
            "mean_ms": round(sum(lat) / len(lat) / 1000, 3) if lat else None,
            "max_ms": round(lat[-1] / 1000, 3) if lat else None,
        }
    )
    problems = []
    if a.status != "ok":
        problems.append("pgbench exited non-zero")
    if not lat or tps is None:
        problems.append("no transactions completed")
    if failed:
        problems.append(f"{failed} failed transactions")
    if "aborted" in text or (os.path.exists(err) and re.search(r"aborted|ERROR", open(err, errors="replace").read())):
        problems.append("client aborted")
    if problems:
        rec["status"] = "failed"
        rec["error"] = "; ".join(problems) + (": " + tail(err) if tail(err) else "")
    append(a.jsonl, rec)
    print(summary_line(rec))
    return 0


# ---------------------------------------------------------------- wrk


def cmd_wrk(a):
    rec = base_record(a, a.status)
    res = None
    try:
        with open(a.result) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        rec["status"] = "failed"
        rec["error"] = f"no wrk result ({e})"
    if res:
        secs = res["duration_us"] / 1e6
        errs = res["errors"]
        nerr = sum(errs.values())
        rec.update(
            {
                "tool": "wrk",
                "throughput": round(res["requests"] / secs, 1) if secs > 0 else None,
                "transactions": res["requests"],
                "p50_ms": round(res["p50_us"] / 1000, 3),
                "p90_ms": round(res["p90_us"] / 1000, 3),
                "p99_ms": round(res["p99_us"] / 1000, 3),
                "mean_ms": round(res["mean_us"] / 1000, 3),
                "max_ms": round(res["max_us"] / 1000, 3),
                "errors": errs,
            }
        )
        if a.status != "ok":
            rec["status"] = "failed"
            rec["error"] = "wrk exited non-zero"
        elif res["requests"] == 0:
            rec["status"] = "failed"
            rec["error"] = "no requests completed"
        elif nerr:
            rec["status"] = "failed"
            rec["error"] = f"{nerr} request errors {errs} of {res['requests']} requests"
    append(a.jsonl, rec)
    print(summary_line(rec))
    return 0


def cmd_record(a):
    rec = json.loads(a.json) if a.json else {}
    for kv in a.kv or []:
        k, _, v = kv.partition("=")
        if k == "json":
            rec.update(json.loads(v))
            continue
        try:
            v = json.loads(v) if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", v) else v
        except ValueError:
            pass
        rec[k] = v
    append(a.jsonl, rec)
    print(summary_line(rec))
    return 0


def summary_line(rec):
    head = f"  {rec.get('scenario')}/{rec.get('target')}"
    if rec.get("clients"):
        head += f" c={rec['clients']}"
    if rec.get("status") != "ok":
        return f"{head}: {rec.get('status').upper()}: {rec.get('error') or rec.get('reason', '')}"
    if "throughput" in rec:
        return (f"{head}: {fmt(rec['throughput'])}/s  p50 {fmt(rec.get('p50_ms'))} ms"
                f"  p99 {fmt(rec.get('p99_ms'))} ms  ({rec.get('transactions')} tx)")
    if "mean" in rec:
        return f"{head}: buffers mean {rec['mean']} max {rec['max']}"
    if "seconds" in rec:
        return f"{head}: {rec['seconds']} s"
    return f"{head}: ok"


def p95(values):
    """95th percentile (nearest rank) of a list of numbers, or None."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, -(-95 * len(v) // 100) - 1)]


def fmt(v, digits=None):
    if v is None:
        return "–"
    if isinstance(v, float):
        if digits is not None:
            return f"{v:.{digits}f}"
        if v >= 100:
            return f"{v:,.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# ---------------------------------------------------------------- report

SQL_SCENARIOS = [
    ("append", "Append one message", "tx/s"),
    ("newest", "Newest page of 50 (random thread)", "pages/s"),
    ("history_warm", "History page of 50, older half of a busy thread, warm cache", "pages/s"),
    ("history_cold", "History page of 50, cold cache (after restart + dropped OS caches)", "pages/s"),
]
TARGETS = ["progressdb", "progressdb_jsonb", "naive", "naive_json", "langchain"]
# progressdb's two faces: the text face (list_messages_text / post_message_text,
# the documents as JSON text rendered once; what the gateway serves) is the
# `progressdb` target; the jsonb face (list_messages / post_message) is
# `progressdb_jsonb`, measured beside it (older results.json files have no
# jsonb target and measured the jsonb functions as `progressdb`).
PDB_FACES = ("progressdb", "progressdb_jsonb")
TARGET_LABEL = {
    "progressdb": "progressdb, text face (SQL API)",
    "progressdb_jsonb": "progressdb, jsonb face (SQL API)",
    "naive": "naive table",
    "naive_json": "naive table + JSON in SQL",
    "langchain": "langchain-postgres shape",
}
# Scenarios that compare progressdb with the naive table + JSON built in SQL
# (informational, in "Targets"): scenario, name, unit, table it is reported in.
NAIVE_JSON_SCENARIOS = [("append", "append", "tx/s", "Append table"),
                        ("newest", "newest page", "pages/s", "Newest page table"),
                        ("history_warm", "history page (warm)", "pages/s", "History page, warm cache table"),
                        ("history_cold", "history page (cold)", "pages/s", "History page, cold cache table")]


def has_naive_json(recs, scenario=None):
    """Whether the run has the naive + JSON in SQL baseline (older results.json files do not)."""
    return any(r.get("target") == "naive_json" and (scenario is None or r.get("scenario") == scenario)
               for r in recs)


def find(recs, scenario, target=None, clients=None):
    out = []
    for r in recs:
        if r.get("scenario") != scenario:
            continue
        if target is not None and r.get("target") != target:
            continue
        if clients is not None and r.get("clients") != clients:
            continue
        out.append(r)
    return out


def ok(r):
    return r is not None and r.get("status") == "ok"


def one(recs, *args, **kw):
    """The run to report: the best successful round (highest throughput), else the last run."""
    rs = find(recs, *args, **kw)
    if not rs:
        return None
    good = [r for r in rs if ok(r) and r.get("throughput") is not None]
    return max(good, key=lambda r: r["throughput"]) if good else rs[-1]


def ratio(a, b, key="throughput"):
    if ok(a) and ok(b) and a.get(key) and b.get(key):
        return a[key] / b[key]
    return None


def verdict(flag):
    return "**met**" if flag else "**missed**"


def build(recs, meta):
    """Adds derived numbers (ratios, target verdicts) to a results document."""
    derived = {"ratios": [], "targets": []}
    for scen, _, _ in SQL_SCENARIOS:
        for c in sorted({r.get("clients") for r in find(recs, scen)}):
            naive = one(recs, scen, "naive", c)
            naive_json = one(recs, scen, "naive_json", c)
            for t in ("progressdb", "progressdb_jsonb", "naive_json", "langchain"):
                r = one(recs, scen, t, c)
                q = ratio(r, naive)
                if q is not None:
                    entry = {"scenario": scen, "target": t, "clients": c, "throughput_ratio_to_naive": round(q, 3)}
                    qj = ratio(r, naive_json) if t in PDB_FACES else None
                    if qj is not None:
                        entry["throughput_ratio_to_naive_json"] = round(qj, 3)
                    derived["ratios"].append(entry)
    targets = derived["targets"]

    # 1. append >= 0.85x naive INSERT at the same concurrency
    for c in sorted({r.get("clients") for r in find(recs, "append")}):
        p, n = one(recs, "append", "progressdb", c), one(recs, "append", "naive", c)
        q = ratio(p, n)
        targets.append({
            "target": f"append ≥ 0.85× naive INSERT ({c} client{'s' if c != 1 else ''})",
            "measured": f"{q:.2f}× ({fmt(p['throughput'])} vs {fmt(n['throughput'])} tx/s)" if q else "not measured",
            "met": q is not None and q >= 0.85, "where": "Append table; plot panel A"})
    # 2. newest page >= naive
    for c in sorted({r.get("clients") for r in find(recs, "newest")}):
        p, n = one(recs, "newest", "progressdb", c), one(recs, "newest", "naive", c)
        q = ratio(p, n)
        targets.append({
            "target": f"newest page ≥ naive ({c} client{'s' if c != 1 else ''})",
            "measured": f"{q:.2f}× ({fmt(p['throughput'])} vs {fmt(n['throughput'])} pages/s)" if q else "not measured",
            "met": q is not None and q >= 1.0, "where": "Newest page table; plot panel A"})
    # 3. history page <= 8 shared buffers (every sampled page: max <= 8)
    b = one(recs, "buffers_history", "progressdb")
    bi = one(recs, "buffers_history", "progressdb_interleaved")
    measured = f"mean {b['mean']}, max {b['max']} buffers over {b['samples']} pages" if ok(b) else "not measured"
    bw = one(recs, "buffers_history", "progressdb_wide")
    if ok(b) and ok(bw):
        measured += (f" (wider sample of {bw['samples']} pages: mean {bw['mean']}, p95 "
                     f"{p95(bw.get('per_page'))}, max {bw['max']})")
    if ok(b) and ok(bi):
        measured = (f"after compact(): {measured}; as loaded (interleaved): mean {bi['mean']}, max {bi['max']}")
    targets.append({
        "target": "history page ≤ 8 shared buffers (EXPLAIN BUFFERS of the page scan, every sampled page)",
        "measured": measured,
        "met": ok(b) and b["max"] is not None and b["max"] <= 8, "where": "Buffers table; plot panel B"})
    # 4. POST /v1/messages >= 3000 req/s with p99 < 20 ms (at some measured concurrency)
    posts = [r for r in find(recs, "http_post", "gateway") if ok(r)]
    if posts:
        best = max(posts, key=lambda r: (r["p99_ms"] < 20, r["throughput"]))
        good = [r for r in posts if r["throughput"] >= 3000 and r["p99_ms"] < 20]
        targets.append({
            "target": "POST /v1/messages ≥ 3000 req/s with p99 < 20 ms",
            "measured": "; ".join(f"{r['clients']} conns: {fmt(r['throughput'])} req/s, p99 {fmt(r['p99_ms'])} ms"
                                  for r in sorted(posts, key=lambda r: r["clients"])),
            "met": bool(good), "where": "HTTP table; plot panel C"})
        del best
    else:
        targets.append({"target": "POST /v1/messages ≥ 3000 req/s with p99 < 20 ms",
                        "measured": http_reason(recs), "met": False, "where": "HTTP section"})
    # 5. gateway >= 0.6x pgbench on the same SQL (every route and concurrency)
    qs = []
    for route in ("http_post", "http_get"):
        for r in find(recs, route, "gateway"):
            s = one(recs, route + "_sql", "pgbench", r.get("clients"))
            q = ratio(r, s)
            if q is not None:
                qs.append((route, r["clients"], q))
    if qs:
        targets.append({
            "target": "gateway ≥ 0.6× pgbench running the same SQL function (every route and concurrency)",
            "measured": "; ".join(f"{'POST' if rt == 'http_post' else 'GET'} {c}: {q:.2f}×" for rt, c, q in qs),
            "met": min(q for _, _, q in qs) >= 0.6, "where": "HTTP table; plot panel C"})
    else:
        targets.append({"target": "gateway ≥ 0.6× pgbench running the same SQL function",
                        "measured": http_reason(recs), "met": False, "where": "HTTP section"})
    # 6. informational: progressdb ÷ the naive table + JSON built in SQL (no threshold)
    for scen, name, unit, table in NAIVE_JSON_SCENARIOS:
        if not has_naive_json(recs, scen):
            continue
        for c in sorted({r.get("clients") for r in find(recs, scen)}):
            p, j = one(recs, scen, "progressdb", c), one(recs, scen, "naive_json", c)
            q = ratio(p, j)
            targets.append({
                "target": f"{name} vs naive table + JSON in SQL ({c} client{'s' if c != 1 else ''})",
                "measured": (f"{q:.2f}× ({fmt(p['throughput'])} vs {fmt(j['throughput'])} {unit})" if q
                             else "not measured"),
                "met": None, "informational": True, "where": f"{table}; plot panel A"})
    derived["issue11"] = issue11_targets(recs)
    return derived


# The 0.2.0 baseline of the issue-11 HTTP target: GET /v1/threads/{id}/messages?limit=50
# at 32 connections as recorded in bench/results.json of commit 2f8bd47 (the full run
# on 0.2.0 before render-once; project at e065c38). A constant rather than read from
# git at report time: once a new full run is committed, the results.json in HEAD is
# that run itself, and a re-render must still compare with the same baseline.
HTTP_GET_BASELINE = {"throughput": 649.6, "clients": 32, "commit": "2f8bd47", "project": "e065c38"}
ISSUE11_TITLE = "Release 0.2 render-once targets (issue 11)"


def issue11_targets(recs):
    """The targets of issue 11, each a ratio (or buffer count) measured in this run.

    Every entry: scenario, target (the threshold), op (">=" or "<="), threshold,
    value (the judged number, None when not measured), measured (text), met
    (None when not measured), jsonb (the jsonb face's ratio, where it has one)."""
    out = []

    def add(scenario, target, op, threshold, value, measured, jsonb=None):
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"scenario": scenario, "target": target, "op": op, "threshold": threshold,
                    "value": None if value is None else round(value, 4), "measured": measured, "met": met,
                    "jsonb": None if jsonb is None else round(jsonb, 4)})

    def vs(a, b, unit, unit_b=None):
        q = ratio(a, b)
        if q is None:
            why = status_cell(a) or status_cell(b) or "not run"
            return None, f"not measured ({why})"
        ua = f" {unit}" if unit_b else ""
        return q, f"{q:.2f}× ({fmt(a['throughput'])}{ua} vs {fmt(b['throughput'])} {unit_b or unit})"

    def clients(c):
        return f"{c} client{'s' if c != 1 else ''}"

    # pages of 50 through the text face vs the naive table's raw rows and its JSON built in SQL
    for scen, page in (("newest", "newest page of 50"), ("history_warm", "history page of 50 (warm)")):
        for c in (1, 8):
            p, pj = one(recs, scen, "progressdb", c), one(recs, scen, "progressdb_jsonb", c)
            for base, label, thr in (("naive", "naive raw rows", 1.0), ("naive_json", "naive + JSON in SQL", 2.0)):
                b = one(recs, scen, base, c)
                q, text = vs(p, b, "pages/s")
                add(f"{page}, {clients(c)}", f"≥ {thr:.1f}× {label}", ">=", thr, q, text, ratio(pj, b))
    # the whole list_messages_text call: shared buffers (mean and max over the sampled pages)
    compacted = ok(one(recs, "compaction", "progressdb"))
    for scen, page in (("buffers_history", "history page, whole list_messages_text call"),
                       ("buffers_newest", "newest page of a compacted thread, whole list_messages_text call")):
        r = one(recs, scen, "progressdb_call")
        if scen == "buffers_newest" and not compacted:
            add(page, "≤ 8 shared buffers (mean and max)", "<=", 8, None,
                "not measured (the threads were not compacted)")
        elif ok(r):
            add(page, "≤ 8 shared buffers (mean and max)", "<=", 8, max(r["mean"], r["max"]),
                f"mean {r['mean']}, max {r['max']} over {r['samples']} pages")
        else:
            add(page, "≤ 8 shared buffers (mean and max)", "<=", 8, None,
                f"not measured ({status_cell(r) or 'not run'})")
    # append through the text face vs the naive INSERT … RETURNING to_jsonb(row)::text (append_naive_json.sql)
    for c in (1, 8):
        p, pj, j = (one(recs, "append", t, c) for t in ("progressdb", "progressdb_jsonb", "naive_json"))
        q, text = vs(p, j, "tx/s")
        add(f"append, {clients(c)}", "≥ 0.85× naive INSERT … RETURNING to_jsonb(row)", ">=", 0.85, q, text,
            ratio(pj, j))
    # HTTP
    hr = http_reason(recs) if not ok(one(recs, "http", "gateway")) else None
    base = HTTP_GET_BASELINE
    g = one(recs, "http_get", "gateway", base["clients"])
    if ok(g):
        q = g["throughput"] / base["throughput"]
        text = f"{q:.2f}× ({fmt(g['throughput'])} vs {base['throughput']:g} req/s)"
    else:
        q, text = None, hr or f"not measured ({status_cell(g) or str(base['clients']) + ' connections not run'})"
    add(f"GET /v1/threads/{{id}}/messages?limit=50, {base['clients']} connections",
        f"≥ 2.5× the 0.2.0 baseline ({base['throughput']:g} req/s, bench/results.json of {base['commit']})",
        ">=", 2.5, q, text)
    for route, name, thr, conns in (("http_get", "GET /v1/threads/{id}/messages?limit=50", 0.8, (32,)),
                                    ("http_post", "POST /v1/messages", 0.7, (8, 32, 64))):
        for c in conns:
            g, sq = one(recs, route, "gateway", c), one(recs, route + "_sql", "pgbench", c)
            if hr:
                q, text = None, hr
            elif g is None:
                q, text = None, f"not measured ({c} connections not run)"
            else:
                q, text = vs(g, sq, "req/s", "tx/s")
            add(f"{name}, {c} connections", f"≥ {thr}× pgbench running the same SQL", ">=", thr, q, text)
    # encrypted threads: newest page vs plain threads' newest page, same clients
    enc = one(recs, "encrypted", "progressdb")
    cs = sorted({r.get("clients") for r in find(recs, "encrypted_newest")}) or [None]
    for c in cs:
        e, pl = one(recs, "encrypted_newest", "encrypted", c), one(recs, "encrypted_newest", "plain", c)
        if enc is None or enc.get("status") != "ok":
            q, text = None, (enc or {}).get("reason") or (enc or {}).get("error") or "not measured"
            if not text.startswith("not measured"):
                text = "not measured: " + text
        else:
            q, text = vs(e, pl, "pages/s")
        add(f"encrypted threads, newest page of 50{', ' + clients(c) if c else ''}",
            "≥ 0.8× plain threads' newest page", ">=", 0.8, q, text)
    return out


def http_reason(recs):
    r = one(recs, "http", "gateway")
    if r and r.get("status") != "ok":
        return f"not measured: {r.get('reason') or r.get('error')}"
    return "not measured"


def md_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def status_cell(r):
    if r is None:
        return "not run"
    if r.get("status") == "ok":
        return None
    return f"{r.get('status')}: {r.get('error') or r.get('reason', '')}"


def scenario_rows(recs, scen, json_col=False):
    """One row per target and client count; json_col adds the ratio to the
    naive table + JSON in SQL (for progressdb, and naive_json's own 1.00×)."""
    rows = []
    for c in sorted({r.get("clients") for r in find(recs, scen)}):
        naive = one(recs, scen, "naive", c)
        naive_json = one(recs, scen, "naive_json", c)
        for t in TARGETS:
            r = one(recs, scen, t, c)
            if r is None:
                continue
            bad = status_cell(r)
            if bad:
                rows.append([TARGET_LABEL[t], str(c), bad, "", "", ""] + ([""] if json_col else []))
                continue
            q = ratio(r, naive)
            row = [TARGET_LABEL[t], str(c), fmt(r["throughput"]), fmt(r["p50_ms"]), fmt(r["p99_ms"]),
                   f"{q:.2f}×" if q is not None else "–"]
            if json_col:
                qj = ratio(r, naive_json) if t in PDB_FACES + ("naive_json",) else None
                row.append(f"{qj:.2f}×" if qj is not None else ("–" if t in PDB_FACES + ("naive_json",) else ""))
            rows.append(row)
    return rows


def write_md(path, recs, meta, derived, png_name):
    L = []
    smoke = meta.get("smoke")
    L.append("# ProgressDB benchmark results" + (" (SMOKE RUN — tiny dataset, not a measurement)" if smoke else ""))
    L.append("")
    L.append(f"Generated by `bench/run.sh` on {meta.get('date')}. Command:")
    L.append("")
    L.append(f"```sh\n{meta.get('command')}\n```")
    L.append("")
    L.append(f"![results]({png_name})")
    L.append("")
    L.append("## Machine and settings")
    L.append("")
    m = meta
    L.append(md_table(["", ""], [
        ["CPU", f"{m.get('cpu_model')} — {m.get('nproc')} cores"],
        ["memory", m.get("memory")],
        ["load average at start", m.get("loadavg_start")],
        ["load average at end", m.get("loadavg_end", "–")],
        ["kernel", m.get("kernel")],
        ["PostgreSQL", m.get("pg_version")],
        ["server settings", m.get("pg_settings")],
        ["project commit", m.get("git")],
        ["extra server settings (--set)", m.get("extra_settings", "none")],
        ["progressdb storage in the read scenarios", m.get("storage", "–")],
        ["each timed run", f"{m.get('duration_s', '–')} s (pgbench -T / wrk -d), after the load"],
        ["whole benchmark", f"{m.get('elapsed_s', '–')} s"],
    ]))
    L.append("")
    L.append("The machine is shared with other work (see the load averages): treat small differences as noise.")
    L.append("Every client, the server and (for HTTP) the gateway and wrk share these cores.")
    L.append("")

    write_md_issue11(L, derived.get("issue11") or [])

    L.append("## Targets")
    L.append("")
    L.append(md_table(["target", "measured", "verdict", "reported in"],
                      [[t["target"], t["measured"],
                        "not measured" if t["measured"].startswith("not measured")
                        else "informational" if t.get("informational") else verdict(t["met"]),
                        t["where"]] for t in derived["targets"]]))
    L.append("")
    if any(t.get("informational") for t in derived["targets"]):
        L.append("The rows marked *informational* compare progressdb with the naive table when that table "
                 "also returns JSON built in SQL (each page one `jsonb_agg` document, each append its row as "
                 "`to_jsonb`), the shape a PostgREST-style server sends; they have no threshold.")
        L.append("")

    ds = m.get("dataset", {})
    L.append("## Dataset and load")
    L.append("")
    if ds:
        L.append(f"{fmt(ds.get('threads'))} threads, {fmt(ds.get('messages'))} messages, generated in PostgreSQL "
                 f"with `setseed({m.get('seed')})` (deterministic). Thread activity is power-law: the busiest "
                 f"thread has {fmt(ds.get('max_thread_messages'))} messages, the median "
                 f"{fmt(ds.get('median_thread_messages'))}, the 90th percentile {fmt(ds.get('p90_thread_messages'))}; "
                 f"{fmt(ds.get('threads_ge_150'))} threads have ≥ 150. Bodies `{{\"text\":…}}` average "
                 f"{fmt(ds.get('avg_body_bytes'))} bytes (100–2000 characters). Messages are loaded in global "
                 f"timestamp order, so timelines interleave on disk. History cursors: {fmt(ds.get('cursors'))} "
                 f"busy threads (mean {fmt(ds.get('cursor_thread_mean_messages'))} messages).")
        L.append("")
    rows = []
    for t in TARGETS:
        r = one(recs, "load", t)
        if r is None:
            continue
        bad = status_cell(r)
        # the load posts through post_message whatever the face of the progressdb target
        lbl = "progressdb (SQL API)" if t == "progressdb" else TARGET_LABEL[t]
        rows.append([lbl, bad or fmt(r.get("seconds")),
                     fmt(r.get("rows_per_s")) if not bad else "", r.get("size", "") if not bad else "",
                     r.get("method", "")])
    L.append(md_table(["target", "load time (s)", "messages/s", "size on disk (table+indexes)", "how"], rows))
    L.append("")
    chk = one(recs, "load_check", "all")
    if chk:
        L.append(f"Load check (every target holds exactly the generated messages in order; every history "
                 f"cursor's opaque page cursor gives the same page as its message id, the messages just older "
                 f"than it): {'passed' if ok(chk) else 'FAILED: ' + chk.get('error', '')}.")
        cc = one(recs, "cursor_check", "compacted")
        if cc:
            L.append(f"The cursor check again after compaction (pages from timeline chunks): "
                     f"{'passed' if ok(cc) else 'FAILED: ' + cc.get('error', '')}.")
        L.append("")

    for scen, title, unit in SQL_SCENARIOS:
        json_col = has_naive_json(recs, scen)
        rows = scenario_rows(recs, scen, json_col)
        if not rows:
            continue
        L.append(f"## {title}")
        L.append("")
        extra = {
            "append": "`SELECT progressdb.post_message_text(thread, author, body)` (text face; jsonb face: "
                      "`post_message`) vs `INSERT … RETURNING id` into "
                      "the naive table (and the langchain table), uniformly random existing thread, body 100–2000 chars.",
            "newest": "`progressdb.list_messages_text(thread, 50)` (text face; jsonb face: `list_messages`) vs "
                      "`SELECT … WHERE thread = $1 ORDER BY created_at "
                      "DESC LIMIT 50` (langchain: `WHERE session_id = $1 ORDER BY id DESC LIMIT 50`).",
            "history_warm": "`list_messages_text(thread, 50, before => cursor)` with the opaque page cursor (jsonb "
                            "face: `list_messages`) vs keyset `created_at < $x ORDER BY "
                            "created_at DESC LIMIT 50` (langchain: `id < $x ORDER BY id DESC`), after one "
                            "warm-up pass over all cursors.",
            "history_cold": "Same queries, each target measured right after a server restart"
                            + (" and `echo 3 > /proc/sys/vm/drop_caches`" if m.get("drop_caches") == "yes"
                               else f" (OS caches NOT dropped: {m.get('drop_caches')})")
                            + f"; {m.get('cold_tx')} pages on 1 client.",
        }[scen]
        if json_col:
            extra += " " + {
                "append": "Naive table + JSON in SQL: the same `INSERT`, `RETURNING to_jsonb(row)::text`.",
            }.get(scen, "Naive table + JSON in SQL: the naive query as a subquery, its rows returned as one "
                        "document, `SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at), '[]')::text "
                        "FROM (…) m`.")
        L.append(extra)
        rounds = max([r.get("round", 1) for r in find(recs, scen)] + [1])
        if rounds > 1:
            solo = [c for c in sorted({r.get("clients") for r in find(recs, scen)})
                    if max(r.get("round", 1) for r in find(recs, scen, clients=c)) < rounds]
            L.append(f"Each row is the target's best of {rounds} rounds, run in alternating target order "
                     "(every round is in `results.json`)"
                     + (f", except at {', '.join(map(str, solo))} client{'s' if solo != [1] else ''}: "
                        f"{m.get('solo_rounds', 1)} round." if solo else "."))
        L.append("")
        L.append(md_table(["target", "clients", f"throughput ({unit})", "p50 (ms)", "p99 (ms)",
                           "throughput ratio to naive"] + (["throughput ratio to naive + JSON"] if json_col else []),
                          rows))
        L.append("")

    L.append("## Shared buffers per page of 50")
    L.append("")
    L.append("`EXPLAIN (ANALYZE, BUFFERS)` of the page query (shared hit + read, execution only) over the first "
             f"{m.get('buffer_samples')} history cursors (random busy threads), warm. For progressdb the query is "
             "the page read `list_messages_text` runs, `SELECT * FROM progressdb._page_text(thread, seq, 50, false)` "
             "(timeline chunks where the thread is compacted that far, else an index range scan of the messages; "
             "it returns the page as one row of rendered documents), "
             "with seq = the cursor's position for a history page and the thread's last seq + 1 for the newest "
             "page; the whole `list_messages_text` call with the opaque page cursor, as the gateway makes it "
             "(thread lookup, page, has_after probe, page document), is judged in the issue-11 targets.")
    L.append("")
    comp = one(recs, "compaction", "progressdb")
    if comp is not None:
        if ok(comp):
            L.append(f"Timeline clustering: the rows marked *as loaded* were measured before compaction; then "
                     f"`progressdb.compact(max_threads => 500, min_age => '0')` copied {fmt(comp.get('messages'))} "
                     f"messages into {fmt(comp.get('chunks'))} timeline chunks in {fmt(comp.get('seconds'))} s "
                     f"({comp.get('calls')} calls), followed by `VACUUM ANALYZE`. Chunks: "
                     f"{comp.get('messages_per_chunk')} messages and {fmt(comp.get('chunk_stored_bytes'))} bytes "
                     f"stored (zstd-packed) on average, {comp.get('chunks_over_8000_bytes')} over 8,000 bytes; chunk table "
                     f"{comp.get('chunks_size')}, progressdb storage in all {comp.get('size')}. Every other "
                     "progressdb number on this page (buffers and throughput) is on the compacted storage.")
        else:
            L.append(f"Timeline clustering: compaction FAILED ({comp.get('error')}); progressdb numbers are on "
                     "the storage as loaded.")
        L.append("")
    rows = []
    compacted = ok(comp)
    for scen, label in (("buffers_history", "history page"), ("buffers_newest", "newest page")):
        for t in ["progressdb_interleaved"] + TARGETS + ["progressdb_call", "progressdb_wide"]:
            r = one(recs, scen, t)
            if r is None:
                continue
            lbl = {"progressdb_interleaved": "progressdb, as loaded (interleaved)",
                   "progressdb_call": "progressdb: whole list_messages_text call",
                   "progressdb_wide": f"progressdb, wider sample ({r.get('samples')} pages)"}.get(t, TARGET_LABEL.get(t))
            if t == "progressdb" and compacted:
                lbl = "progressdb, after compact()"
            bad = status_cell(r)
            if bad:
                rows.append([label, lbl, bad, "", "", "", "", "", ""])
                continue
            rows.append([label, lbl, fmt(r.get("samples")), fmt(r["mean"]), fmt(p95(r.get("per_page"))),
                         fmt(r["max"]), fmt(r["min"]), fmt(r.get("mean_read")), fmt(r.get("mean_rows"))])
    L.append(md_table(["page", "target", "pages", "mean buffers", "p95", "max", "min", "mean read from disk",
                       "rows"], rows))
    L.append("")
    if has_naive_json(recs) and not any(r.get("scenario", "").startswith("buffers_") and r.get("target") == "naive_json"
                                        for r in recs):
        toast = m.get("naive_toast_bytes")
        note = ("The naive table + JSON in SQL is not measured separately: its page is the naive query with an "
                "aggregate over the same 50 rows on top, so it touches the naive table's buffers above")
        if str(toast) == "0":
            note += (" (the naive table has no values stored out of line in TOAST, so building the JSON reads no "
                     "more pages).")
        elif toast not in (None, ""):
            size = fmt(int(toast)) if str(toast).isdigit() else toast
            note += (f", plus the TOAST pages of any of those rows' bodies stored out of line (the naive table's TOAST "
                     f"table holds {size} bytes), which the JSON aggregate reads and the EXPLAIN of the bare query "
                     "does not.")
        else:
            note += "."
        L.append(note)
        L.append("")

    L.append("## HTTP (gateway) vs the same SQL through pgbench")
    L.append("")
    h = one(recs, "http", "gateway")
    if h is None or h.get("status") != "ok":
        L.append(f"HTTP {http_reason(recs)}.")
    else:
        L.append(f"wrk against the gateway (`{h.get('binary')}`, pool {h.get('pool_size')} connections, rate "
                 f"limit off) vs pgbench running the SQL the gateway runs, same number of clients as wrk "
                 f"connections. Gateway peak RSS (VmHWM): **{h.get('vmhwm', '–')}**.")
        if "/debug/" in str(h.get("binary", "")):
            L.append("")
            L.append("**The gateway binary is a debug build: its HTTP numbers are not representative.**")
        L.append("")
        rows = []
        for route, name in (("http_post", "POST /v1/messages"), ("http_get", "GET /v1/threads/{id}/messages?limit=50")):
            for r in sorted(find(recs, route, "gateway"), key=lambda r: r["clients"]):
                s = one(recs, route + "_sql", "pgbench", r["clients"])
                bad = status_cell(r)
                if bad:
                    rows.append([name, str(r["clients"]), bad, "", "", "", ""])
                    continue
                q = ratio(r, s)
                rows.append([name, str(r["clients"]), fmt(r["throughput"]), fmt(r["p50_ms"]), fmt(r["p99_ms"]),
                             fmt(s["throughput"]) if ok(s) else (status_cell(s) or "–"),
                             f"{q:.2f}×" if q is not None else "–"])
        L.append(md_table(["route", "connections", "gateway req/s", "p50 (ms)", "p99 (ms)",
                           "pgbench same SQL (tx/s)", "gateway / pgbench"], rows))
    L.append("")
    L.append("## Encrypted vs plain threads")
    L.append("")
    e = one(recs, "encrypted", "progressdb")
    if e is None or e.get("status") != "ok":
        L.append(f"{(e or {}).get('reason') or (e or {}).get('error') or 'not measured'}.")
    else:
        L.append(f"{e.get('threads')} plain and {e.get('threads')} encrypted threads, each first given "
                 f"{e.get('messages_per_thread')} messages (the load row), then append and newest page of 50 "
                 "through the SQL API's text face (`post_message_text`, `list_messages_text`) on uniformly random "
                 "threads of each set.")
        L.append("")
        rows = []
        for scen, label in (("encrypted_load", "load (1 session)"), ("encrypted_append", "append"),
                            ("encrypted_newest", "newest page of 50")):
            plain = one(recs, scen, "plain")
            for t in ("plain", "encrypted"):
                r = one(recs, scen, t)
                if r is None:
                    continue
                bad = status_cell(r)
                q = ratio(r, plain)
                rows.append([label, t, str(r.get("clients", "")), bad or fmt(r.get("throughput")),
                             "" if bad else fmt(r.get("p50_ms")), "" if bad else fmt(r.get("p99_ms")),
                             f"{q:.2f}×" if q is not None else "–"])
        L.append(md_table(["scenario", "threads", "clients", "throughput (/s)", "p50 (ms)", "p99 (ms)",
                           "ratio to plain"], rows))
        chk = one(recs, "encrypted_check", "encrypted")
        if chk:
            L.append("")
            L.append("Stored rows of encrypted threads checked for plaintext: "
                     + ("none found." if ok(chk) else f"FAILED: {chk.get('error')}"))
    L.append("")
    fails = [r for r in recs if r.get("status") == "failed"]
    if fails:
        L.append("## Failures")
        L.append("")
        for r in fails:
            L.append(f"- {r.get('scenario')}/{r.get('target')} c={r.get('clients')}: {r.get('error')}")
        L.append("")
    L.append("Raw numbers: `results.json` (every run, with p50/p90/p99/mean/max latency and transaction counts).")
    L.append("")
    text = "\n".join(L)
    for section in kept_sections(path):
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def issue11_verdict(t):
    if t["met"] is None:
        return "not measured"
    return verdict(t["met"])


def write_md_issue11(L, rows):
    if not rows:
        return
    L.append(f"## {ISSUE11_TITLE}")
    L.append("")
    L.append("Each target is a ratio of two numbers measured in this run (or, for buffers, a count), judged on "
             "progressdb's **text face** (`list_messages_text` / `post_message_text`: the documents rendered once, "
             "as JSON text; what the gateway serves). The last column is the same ratio for the **jsonb face** "
             "(`list_messages` / `post_message`, the text parsed into jsonb), not judged. \"naive raw rows\": "
             "the naive table's bare `SELECT … LIMIT 50`; \"naive + JSON in SQL\": the same rows as one "
             "`jsonb_agg(to_jsonb(row))` document, as text. HTTP baseline: GET at "
             f"{HTTP_GET_BASELINE['clients']} connections in `bench/results.json` of commit "
             f"{HTTP_GET_BASELINE['commit']} (0.2.0 before render-once), a constant in `bench/lib/report.py`.")
    L.append("")
    L.append(md_table(["scenario", "target", "measured (text face)", "verdict", "jsonb face"],
                      [[t["scenario"], t["target"], t["measured"], issue11_verdict(t),
                        f"{t['jsonb']:.2f}×" if t.get("jsonb") is not None else ""] for t in rows]))
    L.append("")
    n = [t for t in rows if t["met"] is not None]
    L.append(f"{sum(1 for t in n if t['met'])} of {len(n)} measured targets met"
             + (f"; {len(rows) - len(n)} not measured." if len(rows) > len(n) else "."))
    L.append("")


def kept_sections(path):
    """Sections that other scripts keep in RESULTS.md between <!-- NAME:begin -->
    and <!-- NAME:end --> (bench/members.sh writes one): carried over as they
    are when this report rewrites the file."""
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        return []
    return [m.group(0) for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", old, re.S)]


def write_png(path, recs, meta, derived):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"progressdb": "#2f6fba", "progressdb_jsonb": "#8db4e2", "naive": "#9a9a9a", "naive_json": "#5b5b5b",
              "langchain": "#e08a2c", "progressdb_interleaved": "#c7daf0", "progressdb_call": "#1b3f6e",
              "gateway": "#2f6fba", "pgbench": "#9a9a9a"}
    # the jsonb face: progressdb's light blue, hatched
    hatch = {"progressdb_jsonb": "//"}
    sql_scens = {s for s, _, _ in SQL_SCENARIOS}
    # targets with SQL scenario runs (older results.json files have no naive_json)
    present = [t for t in TARGETS if any(r.get("target") == t and r.get("scenario") in sql_scens for r in recs)]
    # A (SQL throughput) and D (latency) have a group per scenario and client count and a bar per
    # target: full width. B and C share a row. E, the issue-11 targets, has a bar per target.
    # Laid out by hand (no tight_layout): E's long row labels would otherwise push every
    # full-width panel to the right.
    n11 = len(derived.get("issue11") or [])
    e_h = max(0.42 * n11 + 1.2, 3) if n11 else 0
    fig_h = 19.5 + e_h
    fig = plt.figure(figsize=(16, fig_h))
    gs = fig.add_gridspec(4 if n11 else 3, 2, height_ratios=[6, 6, 6] + ([e_h] if n11 else []),
                          left=0.06, right=0.98, top=1 - 1.5 / fig_h, bottom=0.8 / fig_h,
                          hspace=0.42, wspace=0.2)
    axes = [[fig.add_subplot(gs[0, :]), fig.add_subplot(gs[1, 0])], [fig.add_subplot(gs[1, 1]), fig.add_subplot(gs[2, :])]]
    fig.suptitle(
        f"ProgressDB benchmark{' (SMOKE — tiny dataset)' if meta.get('smoke') else ''} — "
        f"{fmt(meta.get('dataset', {}).get('messages'))} messages in {fmt(meta.get('dataset', {}).get('threads'))} "
        f"threads — {meta.get('nproc')} cores, load {meta.get('loadavg_start')} — {meta.get('date', '')[:10]}",
        fontsize=13, fontweight="bold", y=1 - 0.35 / fig_h)

    # A: throughput ratio to naive
    ax = axes[0][0]
    groups = []
    for scen, title, _ in SQL_SCENARIOS:
        for c in sorted({r.get("clients") for r in find(recs, scen)}):
            short = {"append": "append", "newest": "newest page", "history_warm": "history page\nwarm",
                     "history_cold": "history page\ncold"}[scen]
            groups.append((scen, c, f"{short}\n{c} client{'s' if c != 1 else ''}"))
    goal = {"append": 0.85, "newest": 1.0, "history_warm": 1.0}
    # progressdb's faces, the naive table + JSON in SQL (when measured) and langchain, each ÷ naive
    abars = [t for t in ("progressdb", "progressdb_jsonb", "naive_json", "langchain")
             if t not in ("naive_json", "progressdb_jsonb") or t in present]
    w = 0.76 / len(abars)
    labelled = set()
    for i, (scen, c, label) in enumerate(groups):
        naive = one(recs, scen, "naive", c)
        for j, t in enumerate(abars):
            r = one(recs, scen, t, c)
            q = ratio(r, naive)
            x = i + (j - (len(abars) - 1) / 2) * w
            if q is None:
                if r is not None:  # run but failed (targets not run at this client count: no bar)
                    ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)
                continue
            ax.bar(x, q, w, color=colors[t], hatch=hatch.get(t), edgecolor="white" if t in hatch else None,
                   label=TARGET_LABEL[t] if t not in labelled else None)
            labelled.add(t)
            ax.text(x, q, f"{q:.2f}×", ha="center", va="bottom", fontsize=9 if len(abars) < 3 else 7.5,
                    fontweight="bold" if t == "progressdb" else None)
        if scen in goal:
            half = len(abars) * w / 2
            ax.plot([i - half, i + half], [goal[scen]] * 2, color="#c0392b", lw=2.5,
                    label="target (pages ≥ 1×, append ≥ 0.85×)" if not any(g[0] in goal for g in groups[:i]) else None)
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.text(-0.45, 1.0, "naive = 1", va="bottom", ha="left", fontsize=9)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[2] for g in groups], fontsize=9)
    ax.set_ylabel("throughput ÷ naive table's throughput")
    compacted = ok(one(recs, "compaction", "progressdb"))
    ax.set_title("A. SQL throughput relative to the naive table (higher is better)"
                 + ("\nprogressdb storage: compacted timelines" if compacted else ""))
    ax.legend(loc="upper left", fontsize=9, ncol=3)
    top = max([p.get_height() for p in ax.patches] + [1.2])
    ax.set_ylim(0, top * 1.5)

    # B: buffers per page
    ax = axes[0][1]
    cats = [("buffers_history", "history page"), ("buffers_newest", "newest page")]
    btargets = (["progressdb_interleaved"] if any(ok(one(recs, c, "progressdb_interleaved")) for c, _ in cats)
                else []) + [t for t in TARGETS + ["progressdb_call"] if any(one(recs, c, t) for c, _ in cats)]
    # (naive_json: none, it touches naive's buffers)
    compacted = ok(one(recs, "compaction", "progressdb"))
    blabel = dict(TARGET_LABEL, progressdb_interleaved="progressdb as loaded (interleaved)",
                  progressdb_call="progressdb: whole list_messages_text call")
    if compacted:
        blabel["progressdb"] = "progressdb after compact()"
    w = 0.8 / len(btargets)
    anybar = False
    for i, (scen, label) in enumerate(cats):
        for j, t in enumerate(btargets):
            r = one(recs, scen, t)
            x = i + (j - (len(btargets) - 1) / 2) * w
            if not ok(r):
                continue
            anybar = True
            ax.bar(x, max(r["mean"], 0.5), w, color=colors[t], label=blabel[t] if i == 0 else None)
            ax.plot([x, x], [max(r["min"], 0.5), max(r["max"], 0.5)], color="black", lw=1)
            ax.text(x, max(r["max"], r["mean"]) * 1.12, f"{r['mean']:g}\n(max {r['max']})", ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(8, color="#c0392b", lw=2, label="target ≤ 8 (history page read; whole call: history and newest)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([c[1] for c in cats])
    ax.set_ylabel("shared buffers touched per page of 50 (log)")
    ax.set_title("B. Buffers per page, EXPLAIN (ANALYZE, BUFFERS) — lower is better")
    if anybar:
        ax.legend(loc="upper center", fontsize=8, ncol=2)
        ymax = max([r["max"] for r in recs if r.get("scenario", "").startswith("buffers_") and ok(r)] + [8])
        ax.set_ylim(0.5, ymax * 40)

    # C: HTTP
    ax = axes[1][0]
    h = one(recs, "http", "gateway")
    if h is None or h.get("status") != "ok":
        ax.text(0.5, 0.5, "HTTP " + http_reason(recs), ha="center", va="center", wrap=True, fontsize=12,
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for route, name, mk in (("http_post", "POST /v1/messages", "o"), ("http_get", "GET page of 50", "s")):
            g = sorted([r for r in find(recs, route, "gateway") if ok(r)], key=lambda r: r["clients"])
            s = sorted([r for r in find(recs, route + "_sql", "pgbench") if ok(r)], key=lambda r: r["clients"])
            if g:
                ax.plot([r["clients"] for r in g], [r["throughput"] for r in g], marker=mk, color=colors["gateway"],
                        lw=2, label=f"{name} via gateway")
                for r in g:
                    ax.annotate(f"p99 {r['p99_ms']:.0f} ms", (r["clients"], r["throughput"]), fontsize=8,
                                textcoords="offset points", xytext=(4, 6))
            if s:
                ax.plot([r["clients"] for r in s], [r["throughput"] for r in s], marker=mk, ls="--",
                        color=colors["pgbench"], lw=1.5, label=f"{name}: same SQL via pgbench")
        ax.axhline(3000, color="#c0392b", lw=2, label="target: POST ≥ 3000 req/s, p99 < 20 ms")
        ax.set_xscale("log", base=2)
        conns = sorted({r["clients"] for r in find(recs, "http_post", "gateway")})
        ax.set_xticks(conns)
        ax.set_xticklabels([str(c) for c in conns])
        if conns:
            ax.set_xlim(conns[0] / 1.4, conns[-1] * 1.6)
        ax.set_xlabel("concurrent connections / clients")
        ax.set_ylabel("requests (transactions) per second")
        ax.set_ylim(0, max([max(l.get_ydata()) for l in ax.get_lines()] + [3000]) * 1.25)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"C. HTTP gateway vs pgbench on the same SQL\n(gateway peak RSS {h.get('vmhwm', '?')})")

    # D: p99 latency per scenario
    ax = axes[1][1]
    d_labelled = set()
    w = 0.78 / max(len(present), 1)
    for i, (scen, c, label) in enumerate(groups):
        for j, t in enumerate(present):
            r = one(recs, scen, t, c)
            if not ok(r):
                continue
            x = i + (j - (len(present) - 1) / 2) * w
            ax.bar(x, r["p99_ms"], w, color=colors[t], hatch=hatch.get(t), edgecolor="white" if t in hatch else None,
                   label=TARGET_LABEL[t] if t not in d_labelled else None)
            d_labelled.add(t)
            ax.plot([x - w / 2, x + w / 2], [r["p50_ms"]] * 2, color="white", lw=2)
            ax.text(x, r["p99_ms"] * 1.08, fmt(r["p99_ms"]), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[2] for g in groups], fontsize=9)
    ax.set_ylabel("p99 latency, ms (log); white tick = p50")
    ax.set_title("D. SQL latency: p99 bars, p50 ticks — lower is better")
    ax.legend(fontsize=9, loc="upper left", ncol=3)
    if ax.patches:
        lows = [r["p50_ms"] for scen, c, _ in groups for t in TARGETS
                for r in [one(recs, scen, t, c)] if ok(r) and r.get("p50_ms")]
        ax.set_ylim(min(lows) / 2, max(p.get_height() for p in ax.patches) * 6)

    if n11:
        ax = fig.add_subplot(gs[3, :])
        pos = ax.get_position()
        ax.set_position([0.3, pos.y0, 0.98 - 0.3, pos.height])  # room for the row labels
        plot_issue11(ax, derived["issue11"], colors, hatch)
    fig.savefig(path, dpi=100)


def plot_issue11(ax, rows, colors, hatch):
    """E: each issue-11 target as measured ÷ threshold (buffers: threshold ÷ measured), so that
    every bar is met at ≥ 1; the jsonb face's ratio on the same scale as a hatched bar."""
    def score(t, v):
        if v is None:
            return None
        return v / t["threshold"] if t["op"] == ">=" else (t["threshold"] / v if v > 0 else None)

    ys = list(range(len(rows)))[::-1]
    h = 0.38
    for y, t in zip(ys, rows):
        sc = score(t, t["value"])
        if sc is None:
            ax.text(0.02, y, "not measured", va="center", fontsize=8, color="#555555")
        else:
            ax.barh(y + (h / 2 if t.get("jsonb") is not None else 0), sc, h,
                    color="#2e8b57" if t["met"] else "#c0392b")
            shown = f"{t['value']:g}" if t["op"] == "<=" else f"{t['value']:.2f}×"
            ax.text(sc, y + (h / 2 if t.get("jsonb") is not None else 0), f" {shown}", va="center", fontsize=8)
        sj = score(t, t.get("jsonb"))
        if sj is not None:
            ax.barh(y - h / 2, sj, h, color=colors["progressdb_jsonb"], hatch=hatch["progressdb_jsonb"],
                    edgecolor="white")
            ax.text(sj, y - h / 2, f" {t['jsonb']:.2f}× (jsonb face)", va="center", fontsize=7, color="#333333")
    ax.axvline(1.0, color="black", lw=1.2, ls="--")
    ax.set_yticks(ys)
    # scenario, then the target without its parenthesis (the table has it in full)
    ax.set_yticklabels([f"{t['scenario']}\n{re.sub(r' [(].*[)]$', '', t['target'])}" for t in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    xmax = max([b.get_width() for b in ax.patches] + [1.5])
    ax.set_xlim(0, xmax * 1.3)
    ax.set_xlabel("measured ÷ target (buffers: target ÷ measured); ≥ 1 = met (dashed line)")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="#2e8b57", label="text face: met"), Patch(color="#c0392b", label="text face: missed"),
                       Patch(facecolor=colors["progressdb_jsonb"], hatch=hatch["progressdb_jsonb"], edgecolor="white",
                             label="jsonb face (not judged)")], fontsize=8, loc="lower right")
    ax.set_title(f"E. {ISSUE11_TITLE}: ratios measured in this run, scaled to their targets")


def cmd_report(a):
    recs, meta = [], {}
    if a.from_json:  # re-render from an earlier results.json
        with open(a.from_json) as f:
            old = json.load(f)
        recs, meta = old["runs"], old["meta"]
    else:
        if os.path.exists(a.jsonl):
            with open(a.jsonl) as f:
                recs = [json.loads(l) for l in f if l.strip()]
        meta = json.load(open(a.meta)) if os.path.exists(a.meta) else {}
    if not any(r.get("target") == "progressdb_jsonb" for r in recs):
        # an older run: its progressdb target was the jsonb functions, the only face then
        TARGET_LABEL["progressdb"] = "progressdb (SQL API)"
    derived = build(recs, meta)
    doc = {"meta": meta, "runs": recs, **derived}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    png_name = os.path.basename(a.png) if a.png else "results.png"
    write_md(a.md, recs, meta, derived, png_name)
    rc = 0
    if a.png:
        try:
            write_png(a.png, recs, meta, derived)
        except Exception as e:  # a missing matplotlib must not hide the numbers
            print(f"plot failed: {e!r}", file=sys.stderr)
            rc = 3
    print(f"\n{ISSUE11_TITLE}:")
    for t in derived["issue11"]:
        v = "not measured" if t["met"] is None else "MET" if t["met"] else "MISSED"
        jb = f"  [jsonb face {t['jsonb']:.2f}×]" if t.get("jsonb") is not None else ""
        print(f"  [{v}] {t['scenario']}: {t['target']}: {t['measured']}{jb}")
    print("\nTargets:")
    for t in derived["targets"]:
        v = ("not measured" if t["measured"].startswith("not measured") else "info" if t.get("informational")
             else ("MET" if t["met"] else "MISSED"))
        print(f"  [{v}] {t['target']}: {t['measured']}")
    return rc


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pgbench", "wrk"):
        s = sub.add_parser(name)
        s.add_argument("--jsonl", required=True)
        s.add_argument("--scenario", required=True)
        s.add_argument("--target", required=True)
        s.add_argument("--clients", type=int, required=True)
        s.add_argument("--status", required=True)
        s.add_argument("--extra")
        if name == "pgbench":
            s.add_argument("--prefix", required=True)
        else:
            s.add_argument("--result", required=True)
    s = sub.add_parser("record")
    s.add_argument("--jsonl", required=True)
    s.add_argument("--json")
    s.add_argument("--kv", nargs="*", help="key=value pairs; json=<object> is merged in")
    s = sub.add_parser("report")
    s.add_argument("--jsonl")
    s.add_argument("--meta")
    s.add_argument("--from-json", help="re-render from an earlier results.json instead of --jsonl/--meta")
    s.add_argument("--md", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--png")
    a = p.parse_args()
    return {"pgbench": cmd_pgbench, "wrk": cmd_wrk, "record": cmd_record, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
