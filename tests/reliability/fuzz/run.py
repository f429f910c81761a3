"""Drives schemathesis against a running gateway, once per role, and writes the
summary. Called by tests/reliability/fuzz.sh (which builds and starts the
gateway, and stops it afterwards); run with the fuzz venv's python.

    run.py BASE_URL WORKDIR --examples N --seed S [--budget SECONDS] [--summary FILE]

Per role: seeds a thread of its own (so generated requests also reach
existing threads, messages, members), then runs `schemathesis run` on
BASE_URL/openapi.json with that role's credentials, the checks
not_a_server_error and json_error_shape (hooks.py), and counts what the
gateway answered from its own /metrics (requests by route and status).
Exits non-zero when any role's run failed.
"""

import argparse
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections import Counter

import requests

HERE = os.path.dirname(os.path.abspath(__file__))

FRONTEND = "pk_fuzz_front"
BACKEND = "sk_fuzz_back"
ADMIN = "adm_fuzz"
SIGNING = "sig_fuzz_secret"
USER = "fuzzer"

# The checks every response must pass: schemathesis' own "no 5xx", and the
# documented error shape of every 4xx/5xx (hooks.py). Conformance checks
# (status codes, response schemas, content types) also run: a response the
# document does not describe is a defect of the gateway or of the document.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "json_error_shape",
        "ndjson_export",
        "no_server_error",
    ]
)


def signature(user):
    return hmac.new(SIGNING.encode(), user.encode(), hashlib.sha256).hexdigest()


def roles():
    """(name, headers, description) per role."""
    return [
        (
            "frontend",
            {
                "Authorization": f"Bearer {FRONTEND}",
                "X-User-ID": USER,
                "X-User-Signature": signature(USER),
            },
            "frontend key, signed user (X-User-ID + X-User-Signature)",
        ),
        (
            "backend-user",
            {"Authorization": f"Bearer {BACKEND}", "X-User-ID": USER},
            "backend key acting as a user (X-User-ID)",
        ),
        (
            "backend",
            {"Authorization": f"Bearer {BACKEND}"},
            "backend key, no user (trusted service)",
        ),
        ("admin", {"Authorization": f"Bearer {ADMIN}"}, "admin key"),
    ]


def metrics(base):
    """(method, route, status) -> count, from the gateway's /metrics."""
    r = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    r.raise_for_status()
    out = Counter()
    for line in r.text.splitlines():
        if not line.startswith("progressdb_http_requests_total{"):
            continue
        labels, value = line[len("progressdb_http_requests_total{") :].rsplit("} ", 1)
        d = {}
        for part in labels.split('",'):
            k, v = part.split('="', 1)
            d[k] = v.rstrip('"')
        out[(d["method"], d["route"], int(d["status"]))] += int(float(value))
    return out


def seed(base, role):
    """A thread of this role's own, owned by USER, with messages, a reply, a
    reaction, an edit and a second member. Returns path-parameter values
    that exist."""
    h = {"Authorization": f"Bearer {BACKEND}", "Content-Type": "application/json"}
    thread = f"fuzz-{role}"
    ids = []
    for i in range(3):
        body = {"thread": thread, "author": USER, "body": {"text": f"seed {i}"}}
        if ids:
            body["reply_to"] = ids[0]
        r = requests.post(f"{base}/v1/messages", headers=h, json=body, timeout=30)
        r.raise_for_status()
        ids.append(r.json()["id"])
    requests.put(
        f"{base}/v1/messages/{ids[1]}", headers=h, json={"body": {"text": "edited"}}, timeout=30
    ).raise_for_status()
    requests.post(
        f"{base}/v1/messages/{ids[0]}/reactions",
        headers=h,
        json={"id": USER, "reaction": "+1"},
        timeout=30,
    ).raise_for_status()
    requests.post(
        f"{base}/v1/threads/{thread}/members",
        headers={**h, "X-User-ID": USER},
        json={"user": "friend", "role": "member"},
        timeout=30,
    ).raise_for_status()
    return {
        "thread": [thread],
        "id": ids,
        "mid": ids,
        "user": [USER, "friend"],
        "identity": [USER],
        "author": [USER],
    }


def run_role(args, name, headers, seeds, workdir):
    failures = os.path.join(workdir, f"failures-{name}.jsonl")
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="hooks",
        PYTHONPATH=HERE,
        FUZZ_ROLE=name,
        FUZZ_FAILURES=failures,
        FUZZ_SEEDS=json.dumps(seeds),
    )
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "run",
        f"{args.base}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        args.phases,
        "--max-examples",
        str(args.examples),
        "--seed",
        str(args.seed),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report-dir",
        os.path.join(workdir, f"report-{name}"),
    ]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    log = os.path.join(workdir, f"schemathesis-{name}.log")
    started = time.monotonic()
    with open(log, "w") as out:
        try:
            rc = subprocess.run(
                cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=args.budget,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    elapsed = time.monotonic() - started
    found = []
    if os.path.exists(failures):
        with open(failures) as f:
            found = [json.loads(line) for line in f if line.strip()]
    return rc, elapsed, log, found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("workdir")
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--phases", default="examples,coverage,fuzzing")
    p.add_argument("--budget", type=int, default=900, help="seconds per role")
    p.add_argument("--summary", help="write the markdown summary here")
    p.add_argument("--rerun", default="bash tests/reliability/fuzz.sh")
    args = p.parse_args()

    doc = requests.get(f"{args.base}/openapi.json", timeout=30).json()
    documented = {(m.upper(), path) for path, item in doc["paths"].items() for m in item}
    results = []
    ok = True
    for name, headers, what in roles():
        seeds = seed(args.base, name)
        before = metrics(args.base)
        rc, elapsed, log, found = run_role(args, name, headers, seeds, args.workdir)
        after = metrics(args.base)
        delta = after - before
        # the scrape of `before` itself is counted in `after`
        delta[("GET", "/metrics", 200)] -= 1
        delta = +delta
        total = sum(delta.values())
        statuses = Counter()
        for (_, _, status), n in delta.items():
            statuses[status] += n
        ops = {(m, r) for (m, r, _) in delta if (m, r) in documented}
        passed = rc == 0
        ok &= passed
        results.append((name, what, rc, elapsed, total, statuses, len(ops), found, log, ops, delta))
        print(
            f"fuzz: {name:<13} {total:>6} requests, {len(ops):>2} operations, "
            f"{elapsed:6.1f}s, statuses {dict(sorted(statuses.items()))}, "
            f"{'ok' if passed else f'FAILED (schemathesis exit {rc}; see {log})'}",
            file=sys.stderr,
            flush=True,
        )
        if not passed:
            with open(log) as f:
                tail = f.read()[-6000:]
            print(tail, file=sys.stderr)

    total = sum(r[4] for r in results)
    hist = Counter()
    for r in results:
        hist.update(r[5])
    five = sum(n for s, n in hist.items() if s >= 500)
    failures = sum(len(r[7]) for r in results)
    print(
        f"fuzz: total {total} requests, {len(set().union(*[r[9] for r in results]))} of "
        f"{len(documented)} documented operations reached, statuses {dict(sorted(hist.items()))}, "
        f"5xx {five}, check failures {failures}",
        file=sys.stderr,
    )

    if args.summary:
        with open(args.summary, "w") as f:
            f.write(markdown(args, results, total, hist, five, failures))
    sys.exit(0 if ok else 1)


def markdown(args, results, total, hist, five, failures):
    doc = json.loads(requests.get(f"{args.base}/openapi.json", timeout=30).text)
    throttled = sorted({(m, r) for res in results for (m, r, st) in res[10] if st == 429})
    nops = sum(
        1 for item in doc["paths"].values() for m in item if m in ("get", "post", "put", "delete", "patch")
    )
    lines = [
        "## Schema-driven fuzzing (`tests/reliability/fuzz.sh`)",
        "",
        f"schemathesis "
        f"{subprocess.run([os.path.join(os.path.dirname(sys.executable), 'schemathesis'), '--version'], capture_output=True, text=True).stdout.split()[-1]} "
        f"generated requests from the gateway's own OpenAPI document (`GET /openapi.json`, "
        f"{nops} operations) and sent them to a gateway with an embedded cluster, over loopback, "
        f"once per role. Phases: {args.phases.replace(',', ', ')}; at most {args.examples} "
        f"generated cases per operation and phase; seed {args.seed}. Valid and invalid "
        "inputs both (missing and mistyped fields, boundary numbers, odd strings, wrong "
        "JSON types); half of the generated path parameters (and `thread`/`author` query "
        "parameters) are replaced by a thread, message or user seeded for the role, so the "
        "routes are also exercised past their 404s and 403s. The gateway has keys "
        "configured (no development profile), no rate limit, and a master key file "
        "(encrypted threads are created and read too).",
        "",
        "Every response must pass: no 5xx (`not_a_server_error`); every 4xx/5xx is "
        '`application/json` `{"error":"<message>"}` (`json_error_shape`, '
        "`tests/reliability/fuzz/hooks.py`); and the status code, content type and body "
        "match what the document says for that operation (`status_code_conformance`, "
        "`content_type_conformance`, `response_schema_conformance`); every line of an NDJSON "
        "export is a JSON object of export version 1 (`ndjson_export`). Requests and statuses "
        "are counted by the gateway itself (`/metrics`, the per-role seeding not included). "
        "The 405s are the coverage phase trying methods a path does not have (answered with "
        "the JSON error too); the 429s came from "
        + (", ".join(f"`{m} {r}`" for m, r in throttled) or "nowhere")
        + " (typing notices are rate-limited per user by design; the API keys are not).",
        "",
        "| role | credentials | requests | operations reached | time | statuses | failures |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, what, rc, elapsed, n, statuses, nops_hit, found, _, _, _ in results:
        st = ", ".join(f"{s}: {c:,}" for s, c in sorted(statuses.items()))
        fails = len(found) if rc == 0 else f"{len(found)} (exit {rc})"
        lines.append(f"| {name} | {what} | {n:,} | {nops_hit} | {elapsed:.0f} s | {st} | {fails} |")
    lines += [
        "",
        f"**Total: {total:,} requests; 5xx: {five}; check failures: {failures}.** "
        "Status histogram over all roles: "
        + ", ".join(f"{s} × {c:,}" for s, c in sorted(hist.items()))
        + ".",
        "",
        "What it found (each fixed, with a regression test) is listed under "
        "\"Defects found\" below. To run it again: "
        f"`{args.rerun}` (about {max(1, round(sum(r[3] for r in results) / 60))} minutes; "
        "`FUZZ_SEED=<n>` picks the seed, `FUZZ_EXAMPLES=<n>` the cases per operation), "
        "or `bash tests/reliability/fuzz.sh --quick` (a few hundred requests, the one in "
        "`scripts/test.sh`). A failing run prints schemathesis' report with a `curl` line "
        "reproducing each failure.",
    ]
    defects = os.path.join(HERE, "defects.md")
    if os.path.exists(defects):
        with open(defects) as f:
            lines += ["", f.read().strip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
