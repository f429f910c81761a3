#!/usr/bin/env python3
"""Records and report of bench/search.sh.

  meta FILE k=v...                      add settings to the run's meta JSON
  record JSONL k=v... [json=OBJ]        append a record
  pgbench JSONL --prefix P --status S k=v...
                                        one pgbench run: latencies from its
                                        per-transaction logs (P.*), tps from P.out
  report JSONL --meta M --json OUT --md RESULTS.md
                                        write OUT and put the "search" section
                                        into RESULTS.md between
                                        <!-- search:begin --> and <!-- search:end -->
                                        (replaced if there, appended if not)
  rerender SEARCH.json --md RESULTS.md  the section again from an earlier search.json

Exits non-zero from `report` when any run failed. Only the standard library.
"""
import glob
import json
import os
import re
import sys

BEGIN, END = "<!-- search:begin -->", "<!-- search:end -->"


def kv(args):
    out = {}
    for a in args:
        k, _, v = a.partition("=")
        out[k] = json.loads(v) if k == "json" else v
    return out


def append(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cmd_meta(path, args):
    meta = json.load(open(path)) if os.path.exists(path) else {}
    meta.update(kv(args))
    with open(path, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def cmd_pgbench(jsonl, args):
    prefix = args[args.index("--prefix") + 1]
    status = args[args.index("--status") + 1]
    rest = [a for i, a in enumerate(args) if a not in ("--prefix", "--status")
            and args[i - 1] not in ("--prefix", "--status")]
    rec = kv(rest)
    lat = []
    for f in glob.glob(prefix + ".[0-9]*"):
        for line in open(f):
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1000.0)
        os.remove(f)
    out = open(prefix + ".out").read() if os.path.exists(prefix + ".out") else ""
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    err = open(prefix + ".err").read() if os.path.exists(prefix + ".err") else ""
    if "ERROR" in err or "aborted" in out:
        status = "failed"
    if not lat:
        status = "failed"
    rec.update(status=status, n=len(lat), tps=float(m.group(1)) if m else None,
               p50_ms=pct(lat, 50), p99_ms=pct(lat, 99), max_ms=max(lat) if lat else None,
               mean_ms=sum(lat) / len(lat) if lat else None)
    if status == "failed":
        rec["error"] = (err.strip().splitlines() or ["no transactions"])[-1][:300]
    append(jsonl, rec)
    print(f"  {rec.get('name') or rec.get('variant')}: {status}, n={len(lat)}, "
          f"p50={fmt(rec['p50_ms'])} ms, p99={fmt(rec['p99_ms'])} ms, tps={fmt(rec['tps'])}")


def fmt(v, d=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{d}f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,}"


def render(recs, meta):
    load = next((r["json"] for r in recs if r.get("kind") == "load"), {})
    q = [r for r in recs if r.get("kind") == "query"]
    ap = {(r["variant"], r["clients"]): r for r in recs if r.get("kind") == "append"}
    L = [BEGIN, "## Search (release 0.2)", ""]
    L.append(f"`{meta.get('command', 'bench/search.sh')}`, {meta.get('date', '?')}, git {meta.get('git', '?')}, "
             f"{meta.get('nproc', '?')} cores ({meta.get('cpu_model', '?')}), load average "
             f"{meta.get('loadavg_start', '?')} at the start, {meta.get('loadavg_end', '?')} at the end; "
             f"{meta.get('pg_version', '?')}. Dataset: bench/run.sh's generator (same seed), "
             f"{fmt(load.get('messages'))} messages in {fmt(load.get('threads'))} threads, written "
             "straight into the tables with the vectors the API writes (one message in 1,000 also carries "
             "the rare word `zephyrword`; the generator's other words are all common). Messages table "
             f"{fmt((load.get('messages_bytes') or 0) / 2**20)} MiB, of it search vectors "
             f"{fmt((load.get('search_vec_bytes') or 0) / 2**20)} MiB; GIN index "
             f"{fmt((load.get('search_index_bytes') or 0) / 2**20)} MiB. "
             f"The user `searcher` is a member of {fmt(load.get('searcher_threads'))} random threads holding "
             f"{fmt(load.get('searcher_messages'))} messages.")
    L.append("")
    L.append("One client, `SELECT progressdb.search(actor, q)` (a page of 20 with snippets), pgbench "
             "`-M prepared`, every call's latency:")
    L.append("")
    L.append("| who | q | matches (all threads) | calls | p50 ms | p99 ms | max ms |")
    L.append("|---|---|---|---|---|---|---|")
    matches = load.get("matches", {})
    for r in q:
        who = "user in 100 threads" if r.get("actor") != "NULL" else "service (all threads)"
        L.append(f"| {who} | `{r['q']}` | {fmt(matches.get(r['q']))} | {fmt(r['n'])} | {fmt(r['p50_ms'])} | "
                 f"{fmt(r['p99_ms'])} | {fmt(r['max_ms'])} |")
    L.append("")
    L.append("Appends (`post_message_text` into random threads, bodies from the dataset, "
             "`synchronous_commit = off`), with the search index as shipped and with the write path "
             "before search (no vector, no GIN index), in the same cluster:")
    L.append("")
    L.append("| clients | with index tps | without tps | ratio | with p99 ms | without p99 ms |")
    L.append("|---|---|---|---|---|---|")
    for c in sorted({k[1] for k in ap}, key=int):
        w, wo = ap.get(("with_index", c), {}), ap.get(("without_index", c), {})
        ratio = (w.get("tps") / wo.get("tps")) if w.get("tps") and wo.get("tps") else None
        L.append(f"| {c} | {fmt(w.get('tps'))} | {fmt(wo.get('tps'))} | {fmt(ratio, 2)} | "
                 f"{fmt(w.get('p99_ms'))} | {fmt(wo.get('p99_ms'))} |")
    user = [r for r in q if r.get("actor") != "NULL" and r.get("p99_ms") is not None]
    met = [f"`{r['q']}`" for r in user if r["p99_ms"] < 50]
    missed = [f"`{r['q']}` ({fmt(r['p99_ms'])} ms)" for r in user if r["p99_ms"] >= 50]
    L.append("")
    L.append("**Target** p99 < 50 ms for a user in 100 threads: met for " + (", ".join(met) or "none")
             + "; missed for " + (", ".join(missed) or "none") + ".")
    L.append("")
    L.append("Why: a search ranks every match it may return (relevance first), so its cost grows with "
             "the matches in the threads searched. The rare word and the absent one are answered "
             "from the GIN index; a word of this generator's 80-word vocabulary matches about 60% of "
             "all messages, so a user's search reads and ranks thousands of rows, one heap page each "
             "(timelines interleave on disk), and the service's reads and ranks hundreds of thousands. "
             "Appends pay for one `to_tsvector` and the GIN entries (pending list, `fastupdate`) of "
             "each message.")
    failed = [r for r in recs if r.get("status") == "failed"]
    if failed:
        L.append("")
        L.append("Failed runs: " + "; ".join(f"{r.get('name') or r.get('variant')}: {r.get('error')}"
                                             for r in failed))
    L.append(END)
    return "\n".join(L) + "\n", failed


def splice(path, section):
    old = open(path).read() if os.path.exists(path) else ""
    b, e = old.find(BEGIN), old.find(END)
    if b >= 0 and e > b:
        new = old[:b] + section.rstrip("\n") + old[e + len(END):]
        if not new.endswith("\n"):
            new += "\n"
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + section
    with open(path, "w") as f:
        f.write(new)


def cmd_report(jsonl, args):
    recs = [json.loads(l) for l in open(jsonl) if l.strip()]
    meta_path = args[args.index("--meta") + 1]
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    with open(args[args.index("--json") + 1], "w") as f:
        json.dump({"meta": meta, "runs": recs}, f, indent=1, sort_keys=True)
        f.write("\n")
    section, failed = render(recs, meta)
    splice(args[args.index("--md") + 1], section)
    return 1 if failed else 0


def cmd_rerender(path, args):
    d = json.load(open(path))
    section, _ = render(d["runs"], d["meta"])
    splice(args[args.index("--md") + 1], section)
    return 0


def main():
    cmd, path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "meta":
        cmd_meta(path, args)
    elif cmd == "record":
        append(path, kv(args))
    elif cmd == "pgbench":
        cmd_pgbench(path, args)
    elif cmd == "report":
        return cmd_report(path, args)
    elif cmd == "rerender":
        return cmd_rerender(path, args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
