#!/usr/bin/env python3
"""Analysis and report for bench/members.sh (members, read state, inbox).

Subcommands:
  explain  --log F --name N --sql S --jsonl J [--extra JSON]
           parse auto_explain output (psql stderr with client_min_messages=log)
           of one measured call into a record: every executed statement with
           its nesting depth, plan tree and shared buffers (hit + read)
  report   --jsonl J --meta M --json OUT.json --md RESULTS.md
           render the "members" section and put it into RESULTS.md between
           <!-- members:begin --> and <!-- members:end --> (replaced if there,
           appended if not; the rest of the file is left as it is)

Only the standard library.
"""
import argparse
import json
import os
import re
import sys

BEGIN = "<!-- members:begin -->"
END = "<!-- members:end -->"

# ---------------------------------------------------------------- auto_explain

LOG_RE = re.compile(r"^(?:psql:[^\n]*?:\d+: )?LOG:  duration: ([0-9.]+) ms  plan:\n", re.M)
FRAME_RE = re.compile(r'^(?:PL/pgSQL function ([\w."]+)\(.*|SQL function "([\w.]+)" .*)$')


def parse_log(text):
    """Statements logged by auto_explain, in log order (innermost first):
    [{ms, query, depth, frames, plan}]. depth 0 is the top-level statement;
    depth = the number of PL/pgSQL / SQL function frames in its CONTEXT."""
    out = []
    matches = list(LOG_RE.finditer(text))
    dec = json.JSONDecoder()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        chunk = text[m.end():end]
        j = len(chunk) - len(chunk.lstrip())
        doc, k = dec.raw_decode(chunk, j)
        rest = chunk[k:]
        frames, lines = [], []
        ctx = rest.find("CONTEXT:  ")
        if ctx >= 0:
            for line in rest[ctx + len("CONTEXT:  "):].splitlines():
                f = FRAME_RE.match(line.strip())
                if f:
                    frames.append((f.group(1) or f.group(2)).replace('"', ""))
                    lines.append(line.strip())
        out.append({"ms": float(m.group(1)), "query": doc.get("Query Text", ""), "depth": len(frames),
                    "frames": frames, "frame_lines": lines, "plan": doc["Plan"]})
    return out


def roots(sts):
    """Statements not run inside another logged statement (besides the top
    level). A statement is logged when it finishes, after everything it ran;
    one that ran inside statement S has S's call stack as the tail of its own."""
    claimed = [False] * len(sts)
    for i, s in enumerate(sts):
        n = len(s["frame_lines"])
        if n == 0:
            continue
        for j in range(i):
            t = sts[j]
            if not claimed[j] and len(t["frame_lines"]) > n and (n == 0 or t["frame_lines"][-n:] == s["frame_lines"]):
                claimed[j] = True
    return [s for s, c in zip(sts, claimed) if not c and s["depth"] > 0]


def bufs(node):
    return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))


def tree(node):
    """A plan node reduced to what the report shows (recursively)."""
    t = {"node": node.get("Node Type"), "buffers": bufs(node),
         "hit": int(node.get("Shared Hit Blocks", 0)), "read": int(node.get("Shared Read Blocks", 0)),
         "rows": node.get("Actual Rows"), "loops": node.get("Actual Loops")}
    if node.get("Actual Total Time") is not None:
        t["ms"] = round(node["Actual Total Time"] * (node.get("Actual Loops") or 1), 3)
    for k_src, k_dst in (("Index Name", "index"), ("Relation Name", "relation"), ("Alias", "alias"),
                         ("Function Name", "function"), ("Sort Method", "sort_method"),
                         ("Sort Space Used", "sort_kb"), ("Parent Relationship", "parent"),
                         ("Subplan Name", "subplan"), ("Strategy", "strategy"), ("Join Type", "join")):
        if k_src in node:
            t[k_dst] = node[k_src]
    if "Sort Key" in node:
        t["sort_key"] = ", ".join(node["Sort Key"])
    if "Index Cond" in node:
        t["cond"] = node["Index Cond"]
    if "Rows Removed by Filter" in node:
        t["removed_by_filter"] = node["Rows Removed by Filter"]
    if node.get("Plans"):
        t["children"] = [tree(c) for c in node["Plans"]]
    return t


def walk(t):
    yield t
    for c in t.get("children", []):
        yield from walk(c)


def short(q, n=110):
    q = re.sub(r"--[^\n]*", " ", q)
    q = " ".join(q.split())
    return q if len(q) <= n else q[: n - 1] + "…"


def label(st):
    fn = st["frames"][0].split(".")[-1] if st["frames"] else "top level"
    return f"{fn}: {short(st['query'], 90)}"


def cmd_explain(a):
    rec = {"scenario": "explain", "name": a.name, "sql": a.sql, "status": "ok"}
    if a.extra:
        rec.update(json.loads(a.extra))
    try:
        text = open(a.log, errors="replace").read()
        sts = parse_log(text)
        top = [s for s in sts if s["depth"] == 0]
        if not top:
            raise ValueError("no top-level statement in the auto_explain output: " + text[-400:])
        top = top[-1]
        rec["total_buffers"] = bufs(top["plan"])
        rec["total_read"] = int(top["plan"].get("Shared Read Blocks", 0))
        rec["ms"] = top["ms"]
        # statements by depth 1 (run by the called function itself), grouped
        groups = {}
        for s in sts:
            if s["depth"] == 0:
                continue
            key = (s["depth"], label(s))
            g = groups.setdefault(key, {"depth": s["depth"], "statement": label(s), "query": short(s["query"], 600),
                                        "function": s["frames"][0], "executions": 0,
                                        "buffers": 0, "max_buffers": 0, "plan": None, "nodes": set()})
            b = bufs(s["plan"])
            g["executions"] += 1
            g["ms"] = round(g.get("ms", 0) + s["ms"], 3)
            g["buffers"] += b
            g["max_buffers"] = max(g["max_buffers"], b)
            tr = tree(s["plan"])
            for n in walk(tr):
                g["nodes"].add(n["node"] + (f" using {n['index']}" if n.get("index") else "")
                               + (f" on {n['relation']}" if n.get("relation") and not n.get("index") else ""))
            if g["plan"] is None or b > bufs_of_tree(g["plan"]):
                g["plan"] = tr   # the costliest execution's plan
        rec["statements"] = []
        for (_, _), g in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[1]["buffers"])):
            g["nodes"] = sorted(g["nodes"])
            rec["statements"].append(g)
        rec["inner_buffers"] = sum(bufs(s["plan"]) for s in roots(sts))
        rec["statements_logged"] = len(sts)
        if a.explain_json:
            ej = json.load(open(a.explain_json))
            rec["explain_buffers"] = bufs(ej[0]["Plan"])
    except Exception as e:  # noqa: BLE001 - any parse problem is a failed scenario
        rec["status"] = "failed"
        rec["error"] = f"{type(e).__name__}: {e}"[:600]
    with open(a.jsonl, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    if rec["status"] == "ok":
        print(f"  explain/{a.name}: {rec['total_buffers']} buffers ({rec['statements_logged']} statements)")
    else:
        print(f"  explain/{a.name}: FAILED: {rec['error']}")
    return 0


def bufs_of_tree(t):
    return t.get("buffers", 0)


# ---------------------------------------------------------------- report


def load(path):
    recs = []
    if os.path.exists(path):
        with open(path) as f:
            recs = [json.loads(l) for l in f if l.strip()]
    return recs


def fmt(v, digits=None):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
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


def md_table(headers, rows):
    L = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        L.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return L


def get(recs, scenario, **kw):
    out = [r for r in recs if r.get("scenario") == scenario and all(r.get(k) == v for k, v in kw.items())]
    return out


def best(recs, scenario, **kw):
    rs = [r for r in get(recs, scenario, **kw) if r.get("status") == "ok" and r.get("throughput")]
    return max(rs, key=lambda r: r["throughput"]) if rs else None


def median_run(recs, scenario, **kw):
    """The run with the median throughput (the lower middle one of an even count)."""
    rs = sorted((r for r in get(recs, scenario, **kw) if r.get("status") == "ok" and r.get("throughput")),
                key=lambda r: r["throughput"])
    return rs[(len(rs) - 1) // 2] if rs else None


def explain(recs, name):
    rs = [r for r in get(recs, "explain", name=name)]
    return rs[-1] if rs else None


def render_tree(t, indent=0, out=None):
    out = [] if out is None else out
    parts = [t["node"]]
    if t.get("sort_method"):
        parts[0] += f" ({t['sort_method']}, {t.get('sort_kb')} kB)"
    if t.get("join"):
        parts[0] = f"{t['node']} ({t['join']})" if t["node"] != "Hash Join" else t["node"]
    if t.get("index"):
        parts.append(f"using {t['index']}")
    if t.get("relation"):
        parts.append(f"on {t['relation']}")
    if t.get("function"):
        parts.append(f"of {t['function']}()")
    if t.get("subplan"):
        parts.append(f"[{t['subplan']}]")
    rows = t.get("rows")
    loops = t.get("loops")
    stat = f"rows={rows}" + (f" ×{loops} loops" if loops and loops != 1 else "")
    if t.get("removed_by_filter"):
        stat += f" (filtered out {t['removed_by_filter']})"
    stat += f"  buffers={t['buffers']}"
    if t.get("read"):
        stat += f" (read {t['read']})"
    line = ("  " * indent) + ("-> " if indent else "") + " ".join(parts) + "  " + stat
    if t.get("sort_key"):
        line += f"  key: {t['sort_key']}"
    out.append(line)
    for c in t.get("children", []):
        render_tree(c, indent + 1, out)
    return out


def find_stmt(rec, pred):
    if not rec or rec.get("status") != "ok":
        return None
    for s in rec.get("statements", []):
        if pred(s):
            return s
    return None


def main_inbox_stmt(rec):
    """The list_threads statement that reads the memberships (depth 1)."""
    return find_stmt(rec, lambda s: s["depth"] == 1 and "thread_members" in s["query"]
                     and s["function"].endswith("list_threads"))


def first_node(t, pred):
    for n in walk(t):
        if pred(n):
            return n
    return None


def scan_of(plan, relation):
    """How `relation` is read in a plan: (description, index node or heap node, index name, entries read)."""
    for n in walk(plan):
        if n.get("relation") != relation:
            continue
        inode = n
        if n["node"] == "Bitmap Heap Scan":
            kids = [c for c in walk(n) if c.get("index")]
            inode = kids[0] if kids else n
        idx = inode.get("index")
        loops = inode.get("loops") or 1
        entries = (inode.get("rows") or 0) * loops + (inode.get("removed_by_filter") or 0)
        if n["node"] == "Bitmap Heap Scan" and idx:
            desc = f"Bitmap Index Scan using {idx} + Bitmap Heap Scan"
        else:
            desc = n["node"] + (f" using {idx}" if idx else f" on {relation}")
        if loops != 1:
            desc += f", {loops:,} probes"
        else:
            desc += f", {entries:,} rows"
        return desc, inode, idx, entries
    return None, None, None, None


def inbox_summary(rec):
    """Figures of an inbox page from its explain record."""
    if not rec or rec.get("status") != "ok":
        return None
    st = main_inbox_stmt(rec)
    if not st:
        return None
    plan = st["plan"]
    sort = first_node(plan, lambda n: n["node"] == "Sort")
    limit = first_node(plan, lambda n: n["node"] == "Limit")
    mdesc, mnode, midx, mrows = scan_of(plan, "thread_members")
    tdesc, tnode, tidx, trows = scan_of(plan, "threads")
    read = limit["buffers"] if limit else (sort["buffers"] if sort else plan["buffers"])
    return {
        "total": rec["total_buffers"], "ms": rec["ms"], "read": read, "documents": rec["total_buffers"] - read,
        "mem_desc": mdesc, "mem_index": midx, "mem_entries": mrows,
        # a range scan of the user's memberships: one index scan, not a probe per thread
        "mem_range": midx == "thread_members_user_idx" and mnode is not None and (mnode.get("loops") or 1) == 1,
        "threads_desc": tdesc, "threads_index": tidx, "threads_entries": trows,
        "sort": sort, "sort_input": (sort["children"][0]["rows"] if sort and sort.get("children") else None),
        "plan": plan, "nodes": sorted({n["node"] for n in walk(plan)}),
    }


def shape(s):
    """One line: how a page found its threads."""
    if s["mem_range"]:
        how = (f"memberships first: {s['mem_desc']}; threads by {s['threads_desc']}; "
               + (f"top-N Sort of {fmt(s['sort_input'])} rows" if s["sort"] else "no Sort"))
    else:
        how = (f"activity order first: threads by {s['threads_desc']}; memberships by {s['mem_desc']}; "
               + (f"top-N Sort of {fmt(s['sort_input'])} rows" if s["sort"] else "no Sort"))
    return how


def unread_summary(rec):
    """The unread count inside one get_thread call."""
    st = find_stmt(rec, lambda s: s["function"].split(".")[-1] == "_unread")
    if not st:
        return {}
    p = st["plan"]
    idx = first_node(p, lambda n: n.get("index"))
    heap = first_node(p, lambda n: n.get("relation") == "messages")
    entries = None
    if idx:
        entries = (idx.get("rows") or 0) * (idx.get("loops") or 1) + (idx.get("removed_by_filter") or 0)
    return {"unread_buffers": st["buffers"], "unread_nodes": st["nodes"],
            "unread_index_entries": entries,
            "unread_heap_rows": (heap.get("rows") or 0) if heap else None}


def pct_of(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def plural(n, word):
    return f"{fmt(n)} {word}" + ("" if n == 1 else "s")


def render(recs, meta):
    smoke = meta.get("smoke")
    ds = meta.get("dataset", {})
    deep = meta.get("deep_offset", 1000)
    nth = meta.get("warm_calls", 6) + 3
    L = [BEGIN, ""]
    L.append("## Members, read state and the inbox (release 0.2)"
             + (" — SMOKE RUN, tiny dataset, not a measurement" if smoke else ""))
    L.append("")
    L.append(f"Generated by `bench/members.sh` on {meta.get('date')}, in its own PostgreSQL 15 cluster, on "
             f"{meta.get('nproc')} cores ({meta.get('cpu_model') or '?'}) shared with other work: load average "
             f"{meta.get('loadavg_start')} at start, {meta.get('loadavg_end')} at end; {meta.get('elapsed_s')} s in all. Command:")
    L.append("")
    L.append("```sh")
    L.append(meta.get("command", "bench/members.sh"))
    L.append("```")
    L.append("")
    L.append(f"Server: {meta.get('pg_version', '?')}; {meta.get('pg_settings', '')}; autovacuum off (so that "
             "the row counters below move only with the measured calls), `VACUUM ANALYZE` after loading"
             + (f"; {meta['storage']}" if meta.get("storage") else "") + ".")
    L.append("")
    L.append("**Dataset**, loaded through the SQL API (`create_thread`, `add_member`, `post_message`, `mark_read`) "
             f"in {fmt(meta.get('load_s'))} s: {fmt(ds.get('threads'))} threads, {fmt(ds.get('messages'))} messages, "
             f"{fmt(ds.get('memberships'))} memberships. `inbox_user` is a member of {fmt(ds.get('inbox_memberships'))} "
             f"threads; {fmt(ds.get('inbox_unread_threads'))} of them have unread messages, "
             f"{fmt(ds.get('inbox_capped'))} more than 1,000 ({str(ds.get('flood', '?')).replace(',', ', ')}); the newest "
             "activity is split between their threads and as many others. `quiet_user` is a member of "
             f"{fmt(ds.get('quiet_memberships'))} threads, the least recently active ones. "
             f"Thread `big` has {fmt(ds.get('big_members'))} members, `small` {fmt(ds.get('small_members'))}; "
             f"`long` has {fmt(ds.get('long_messages'))} messages.")
    L.append("")
    L.append("**Buffers** are shared buffers (hit + read) touched by the execution of one call (planning not counted), "
             "measured with `auto_explain` (`log_analyze`, `log_buffers`, `log_nested_statements`) on the real function "
             f"call, the {nth}th call of its session unless said otherwise (PL/pgSQL plans a statement for the actual "
             "values on its first five runs in a session, then may switch to a generic plan). auto_explain logs every "
             "statement the functions run, with its plan, so each figure can be split into its statements.")
    chk = explain(recs, "timeline_history_member")
    if chk and chk.get("status") == "ok" and chk.get("explain_buffers") is not None:
        L.append(f"A plain `EXPLAIN (ANALYZE, BUFFERS) SELECT progressdb.list_messages(…)` does report the whole call, "
                 f"function internals included: {chk['explain_buffers']} buffers for the member's history page, where "
                 f"auto_explain logs {chk['total_buffers']} for the top-level statement and {chk['inner_buffers']} for the "
                 "statements run inside it (each counted once).")
    L.append("")

    pages = [("inbox_page1", "`inbox_user`, first page"),
             ("inbox_page1_first", "`inbox_user`, first page, 3rd call of a session"),
             ("inbox_deep", f"`inbox_user`, threads {deep + 1:,}–{deep + 50:,} (`before` cursor)"),
             ("quiet_page1", "`quiet_user`, first page")]
    summ = {name: inbox_summary(explain(recs, name)) for name, _ in pages}

    # ---- figures
    L.append("### Figures")
    L.append("")
    rows = []
    for name, what in pages:
        s = summ[name]
        if s:
            rows.append([f"inbox page of 50: {what}", f"{fmt(s['total'])} buffers",
                         f"finding the 50 threads: {fmt(s['read'])} ({shape(s)}); their 50 documents (last message, "
                         f"unread): {fmt(s['documents'])}; {fmt(s['ms'])} ms instrumented"])
        else:
            r = explain(recs, name)
            rows.append([f"inbox page of 50: {what}", "failed" if r else "not run", (r or {}).get("error", "")])
    for user in ("inbox_user", "quiet_user"):
        for c in (1, 8):
            r = best(recs, "inbox", target=user, clients=c)
            if r:
                rows.append([f"`list_threads('{user}', lim => 50)::text`, pgbench, {plural(c, 'client')}",
                             f"{fmt(r['throughput'])} pages/s",
                             f"p50 {fmt(r.get('p50_ms'))} ms, p99 {fmt(r.get('p99_ms'))} ms ({fmt(r.get('transactions'))} calls)"])
    for r in [x for x in get(recs, "explain") if x.get("kind") == "unread"]:
        if r.get("status") != "ok":
            rows.append([f"`get_thread('{r.get('thread')}', 'inbox_user')`", "failed", r.get("error", "")])
            continue
        u = unread_summary(r)
        rows.append([f"`get_thread(t, 'inbox_user')`, {fmt(r.get('true_unread'))} unread",
                     f"{fmt(r['total_buffers'])} buffers",
                     f"reports `unread` {fmt(r.get('reported_unread'))}; counting it: {fmt(u.get('unread_buffers'))} buffers, "
                     f"{fmt(u.get('unread_index_entries'))} index entries, {fmt(u.get('unread_heap_rows'))} rows "
                     f"({', '.join(u.get('unread_nodes', []))})"])
    big, small = median_run(recs, "post", target="big"), median_run(recs, "post", target="small")
    posts_all = {t: sorted(r["throughput"] for r in get(recs, "post", target=t) if r.get("throughput"))
                 for t in ("big", "small")}
    for r, t in ((big, "big"), (small, "small")):
        if r:
            rows.append([f"`post_message` by a member to `{t}` ({plural(ds.get(t + '_members'), 'member')}), pgbench, 1 client",
                         f"{fmt(r['throughput'])} posts/s",
                         f"median of {len(posts_all[t])} runs ({', '.join(fmt(x) for x in posts_all[t])}); "
                         f"p50 {fmt(r.get('p50_ms'))} ms, p99 {fmt(r.get('p99_ms'))} ms; per post: "
                         f"{fmt(r.get('members_rows_per_post'), 0)} thread_members rows written, "
                         f"{fmt(r.get('threads_upd_per_post'), 2)} threads row updated, "
                         f"{fmt(r.get('wal_bytes_per_post'))} bytes of WAL"])
    if big and small:
        rows.append(["posts/s, `big` ÷ `small`", pct_of(big["throughput"], small["throughput"]),
                     f"medians of {plural(meta.get('rounds', 1), 'round')} each, order flipped between rounds, "
                     "`synchronous_commit` off for these sessions (with one client a post otherwise waits mostly for "
                     "its WAL flush, the same for both threads and noisy on a shared disk)"])
    for x in get(recs, "post_rows_exact"):
        if x.get("status") == "ok":
            rows.append([f"100 posts to `{x['target']}` in one transaction (`pg_stat_get_xact_*`)",
                         f"{x['members_rows']} thread_members rows",
                         f"messages inserted {x['messages_ins']}, threads rows updated {x['threads_upd']}"])
    for page in ("newest", "history"):
        a, b = explain(recs, f"timeline_{page}_service"), explain(recs, f"timeline_{page}_member")
        if a and b and a.get("status") == "ok" and b.get("status") == "ok":
            probe = membership_probe(b)
            rows.append([f"`list_messages('long', 50{', before => …' if page == 'history' else ''})`, {page} page: "
                         "actor NULL → a member", f"{a['total_buffers']} → {b['total_buffers']} buffers",
                         f"+{b['total_buffers'] - a['total_buffers']}; the membership check: "
                         + (f"{plural(probe['executions'], 'statement')}, {probe['buffers']} buffers ({', '.join(probe['nodes'])})"
                            if probe else "not found")])
    L += md_table(["measure", "value", "detail"], rows)
    L.append("")

    # ---- targets
    L.append("### Targets")
    L.append("")
    T = []
    if big and small:
        rows_ok = big.get("members_rows") == 0 and small.get("members_rows") == 0
        T.append([f"posting to a {fmt(ds.get('big_members'))}-member thread writes no per-member rows",
                  "**met**" if rows_ok else "**missed**",
                  f"thread_members rows inserted + updated + deleted: {big.get('members_rows')} in "
                  f"{fmt(big.get('posts_counted'))} posts to `big`, {small.get('members_rows')} in "
                  f"{fmt(small.get('posts_counted'))} posts to `small` (and 0 in 100 posts each counted in-transaction); "
                  f"posts/s `big` ÷ `small` {pct_of(big['throughput'], small['throughput'])}"])
    measured = [(name, what, summ[name]) for name, what in pages if summ[name]]
    if measured:
        notrange = [(w, s) for _, w, s in measured if not s["mem_range"]]
        T.append(["inbox page: the user's memberships read by an index range scan",
                  "**met**" if not notrange else "**missed**",
                  "; ".join(f"{w}: {s['mem_desc']}" for _, w, s in measured)])
        sorted_pages = [(w, s) for _, w, s in measured if s["sort"]]
        T.append(["inbox page: no Sort of all memberships",
                  "**met**" if not sorted_pages else "**missed**",
                  "; ".join(f"{w}: " + (f"Sort ({s['sort'].get('sort_method')}) of {fmt(s['sort_input'])} rows, keeps "
                                         f"{fmt(s['sort']['rows'])}" if s["sort"] else "no Sort") for _, w, s in measured)])
        nm = {"inbox_user": ds.get("inbox_memberships"), "quiet_user": ds.get("quiet_memberships")}
        over = []
        for name, w, s in measured:
            user = "quiet_user" if name.startswith("quiet") else "inbox_user"
            if (s["threads_entries"] or 0) > (nm[user] or 0):
                over.append((w, s, nm[user]))
        T.append(["inbox page: cost bounded by the user's memberships (flat in the number of other threads)",
                  "**met**" if not over else "**missed**",
                  "; ".join(f"{w}: reads {fmt(s['threads_entries'])} threads for a user with {fmt(n)} memberships, "
                            f"{fmt(s['total'])} buffers" for w, s, n in over)
                  or "every measured page read at most the user's memberships and their threads"])
    caps = [r for r in get(recs, "explain") if r.get("kind") == "unread" and r.get("status") == "ok"
            and (r.get("true_unread") or 0) > 1000]
    if caps:
        detail, okcap = [], True
        for r in caps:
            u = unread_summary(r)
            okcap &= r.get("reported_unread") == 1000 and (u.get("unread_heap_rows") or 0) <= 1000
            detail.append(f"{fmt(r['true_unread'])} unread: reports {r.get('reported_unread')}, reads "
                          f"{fmt(u.get('unread_index_entries'))} index entries and {fmt(u.get('unread_heap_rows'))} rows, "
                          f"{fmt(u.get('unread_buffers'))} buffers")
        T.append(["`unread` from the unread range only, capped at 1,000", "**met**" if okcap else "**missed**",
                  "; ".join(detail)])
    for page in ("newest", "history"):
        a, b = explain(recs, f"timeline_{page}_service"), explain(recs, f"timeline_{page}_member")
        if a and b and a.get("status") == "ok" and b.get("status") == "ok":
            probe = membership_probe(b)
            d = b["total_buffers"] - a["total_buffers"]
            one = probe is not None and probe["executions"] == 1 and d <= probe["buffers"] and \
                sum(1 for n in walk(probe["plan"]) if n.get("index")) == 1
            T.append([f"membership check: at most one index probe more ({page} page)",
                      "**met**" if one else "**missed**",
                      f"+{d} buffers over the service's page; "
                      + (f"{plural(probe['executions'], 'statement')} ({', '.join(probe['nodes'])}, {probe['buffers']} buffers)"
                         if probe else "no membership statement found")])
    L += md_table(["target", "verdict", "measured"], T)
    L.append("")

    # ---- plan shapes
    if measured:
        L.append("### Inbox page plans")
        L.append("")
        L.append("The statement in `list_threads(user, lim => 50)` that finds the page's threads, as executed (node, "
                 "actual rows per loop (rounded, so 0 means less than half a row) × loops, shared buffers including "
                 "children; the Aggregate's also include the "
                 "thread documents built for each row). Each distinct plan once, with the pages that used it:")
        L.append("")
        seen = {}
        for name, w, s in measured:
            key = tuple((n["node"], n.get("index"), n.get("relation")) for n in walk(s["plan"]))
            seen.setdefault(key, []).append((name, w, s))
        for key, group in seen.items():
            L.append("- " + "; ".join(w for _, w, _ in group) + f" (plan shown: {group[0][1]}):")
            L.append("")
            L.append("  ```")
            L += ["  " + x for x in render_tree(group[0][2]["plan"])]
            L.append("  ```")
            L.append("")
        r1 = explain(recs, "inbox_page1")
        if r1 and r1.get("status") == "ok":
            L.append("Statements run for the threads of `inbox_user`'s first page (nested SQL functions, part of the "
                     "Aggregate above; `_unread` runs inside `_thread_json`):")
            L.append("")
            srows = []
            for st in r1.get("statements", []):
                if st["depth"] >= 2:
                    srows.append([st["statement"], st["executions"], st["buffers"], st["max_buffers"],
                                  fmt(st.get("ms")), ", ".join(st["nodes"])])
            L += md_table(["statement", "runs", "buffers", "max per run", "ms (instrumented)", "plan nodes"], srows)
            L.append("")

    # ---- notes
    L.append("### Notes")
    L.append("")
    s1, sd, sq = summ.get("inbox_page1"), summ.get("inbox_deep"), summ.get("quiet_page1")
    act = [(w, s) for _, w, s in measured if not s["mem_range"]]
    memf = [(w, s) for _, w, s in measured if s["mem_range"]]
    if act and memf:
        L.append("- **The inbox is not planned the same way for every page.** The function's comment describes the "
                 "memberships-first plan: the user's memberships from `thread_members_user_idx`, each joined to its "
                 "thread by primary key, the page cut by a top-N sort. That plan was used for "
                 + ", ".join(w for w, _ in memf) + ": it reads all of the user's memberships on every page (memory stays "
                 "at `lim` rows), so its cost grows with the number of threads the user belongs to, not with messages. "
                 "For " + ", ".join(w for w, _ in act) + " the planner chose the activity-first plan instead: it walks "
                 "`threads_activity_idx` (every live thread, newest activity first) and probes the user's membership of "
                 "each thread until 50 are found. That is cheap when the user's threads are the most active ones, and "
                 "costs every more recently active thread of every other user when they are not"
                 + (f" (`quiet_user`: {fmt(sq['threads_entries'])} threads walked, {fmt(sq['total'])} buffers, "
                    f"{fmt(sq['ms'])} ms for one page)" if sq and not sq["mem_range"] else "")
                 + ". The planner picks it from its estimate that a user's memberships are spread evenly over the "
                 "activity order; nothing in the query stops it.")
    elif memf:
        L.append("- **The inbox reads all of the user's memberships.** Every measured page used the memberships-first "
                 "plan: `thread_members_user_idx`, each membership joined to its thread, a top-N sort; memory stays at "
                 "`lim` rows, but the work grows with the number of threads the user belongs to (not with messages).")
    elif act:
        L.append("- **Every measured page walked `threads_activity_idx`** (all live threads, newest activity first) "
                 "probing the user's membership of each: its cost grows with the threads more recently active than the "
                 "user's 50th, of all users.")
    L.append("- A plan that reads only the page's 50 rows would need the activity order inside the membership index "
             "(a per-member activity column), that is a per-member write on every post, which the first target rules out.")
    if s1:
        r1 = explain(recs, "inbox_page1")
        tj = find_stmt(r1, lambda st: st["function"].split(".")[-1] == "_thread_json")
        if tj and tj.get("ms") is not None:
            L.append(f"- **Time** of an inbox page goes to its 50 thread documents: of the {fmt(s1['ms'])} ms of "
                     f"`inbox_user`'s first page (instrumented), the 50 `_thread_json` calls (each a nested SQL function "
                     f"run, with its own `_unread` run) take {fmt(tj['ms'])} ms; finding the 50 threads "
                     f"{fmt(first_node(s1['plan'], lambda n: n['node'] == 'Limit').get('ms'))} ms.")
    if caps:
        u = unread_summary(caps[-1])
        nodes = u.get("unread_nodes", [])
        if any(n.startswith("Bitmap") for n in nodes):
            L.append("- **`unread`'s cap bounds the rows, not the index part.** The count is planned as a bitmap scan "
                     f"({', '.join(nodes)}): the bitmap index scan collects every entry of the unread range "
                     f"({fmt(u.get('unread_index_entries'))} for {fmt(caps[-1].get('true_unread'))} unread) before "
                     "`LIMIT 1000` stops the heap visits. It never reads outside the unread range of that thread.")
        else:
            L.append(f"- **`unread`** is counted by an index range scan ({', '.join(nodes)}) of the thread's messages after "
                     "the read position, which stops after 1,000 rows (`LIMIT 1000`): a thread with 3,000 unread costs "
                     "the same as one with 1,200.")
    for n in meta.get("notes") or []:
        L.append(f"- {n}")
    fails = [r for r in recs if r.get("status") == "failed"]
    if fails:
        L.append("- **Failures**: " + "; ".join(
            f"{r.get('scenario')}/{r.get('name') or r.get('target') or ''}: {r.get('error')}" for r in fails))
    L.append("")
    L.append("Raw numbers: `members.json` (every run, and every statement of the measured calls with its plan).")
    L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def membership_probe(rec):
    return find_stmt(rec, lambda s: s["depth"] >= 1 and "thread_members" in s["query"]
                     and s["function"].split(".")[-1] == "_authorize")


def splice(path, section):
    """Replaces the marked section of `path` (or appends it); nothing else changes."""
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


def cmd_report(a):
    recs = load(a.jsonl)
    meta = json.load(open(a.meta)) if os.path.exists(a.meta) else {}
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "runs": recs}, f, indent=1, sort_keys=True)
        f.write("\n")
    splice(a.md, render(recs, meta))
    return 0


def cmd_rerender(a):
    doc = json.load(open(a.from_json))
    splice(a.md, render(doc["runs"], doc["meta"]))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("explain")
    s.add_argument("--log", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--sql", required=True)
    s.add_argument("--jsonl", required=True)
    s.add_argument("--extra")
    s.add_argument("--explain-json", help="EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) output of the same call")
    s = sub.add_parser("report")
    s.add_argument("--jsonl", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--md", required=True)
    s = sub.add_parser("rerender", help="RESULTS.md section again from an earlier members.json")
    s.add_argument("--from-json", required=True)
    s.add_argument("--md", required=True)
    a = p.parse_args()
    return {"explain": cmd_explain, "report": cmd_report, "rerender": cmd_rerender}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
