"""Schemathesis hooks for tests/reliability/fuzz.sh (loaded through
SCHEMATHESIS_HOOKS).

One custom check, `json_error_shape`: every error answer (status >= 400) is
`application/json` holding the documented error document
(`components/schemas/Error` of the OpenAPI document): a JSON object whose
only member is `"error"`, a non-empty string. Together with schemathesis'
`not_a_server_error` it is the fuzzer's verdict; failures are also appended,
one JSON line each, to the file named by FUZZ_FAILURES (for the summary).
"""

import json
import os

import schemathesis


def _note(case, response, problem):
    path = os.environ.get("FUZZ_FAILURES")
    if not path:
        return
    line = {
        "role": os.environ.get("FUZZ_ROLE", ""),
        "operation": f"{case.method.upper()} {case.path}",
        "status": response.status_code,
        "problem": problem,
        "body": response.content[:300].decode("utf-8", "replace"),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _fail(case, response, problem):
    _note(case, response, problem)
    raise AssertionError(problem)


@schemathesis.check
def json_error_shape(ctx, response, case):
    """Every 4xx/5xx answer is application/json {"error": "<message>"}."""
    if response.status_code < 400:
        return None
    types = response.headers.get("content-type") or [""]
    media = types[0].split(";")[0].strip().lower()
    if media != "application/json":
        _fail(case, response, f"{response.status_code} answered with Content-Type {types[0]!r}, not application/json")
    try:
        doc = json.loads(response.content)
    except ValueError:
        _fail(case, response, f"{response.status_code} answered with a body that is not JSON")
    if not isinstance(doc, dict) or set(doc) != {"error"}:
        _fail(case, response, f'{response.status_code} body is not {{"error": "..."}}')
    if not isinstance(doc["error"], str) or not doc["error"].strip():
        _fail(case, response, f"{response.status_code} error message is not a non-empty string")
    return None


def _ndjson_records(content):
    """The records of an NDJSON body; ValueError when a line is not a JSON object."""
    out = []
    # Only "\n" ends a record: str.splitlines() would also split inside
    # strings that hold U+0085, U+2028 or U+2029 (JSON need not escape them).
    for n, line in enumerate(content.decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if not isinstance(rec, dict):
            raise ValueError(f"line {n} is not a JSON object")
        out.append(rec)
    return out


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """Exports stream one record per line; the document describes one record
    (ExportRecord), so schema validation gets the first one, and
    `ndjson_export` below checks every line."""
    records = _ndjson_records(response.content)
    # (a user with nothing to export gets an empty body: nothing to validate)
    return records[0] if records else {"v": 1, "type": "thread"}


@schemathesis.check
def ndjson_export(ctx, response, case):
    """Every line of a 200 NDJSON export is a JSON object of export version 1
    with a known record type."""
    types = response.headers.get("content-type") or [""]
    if response.status_code != 200 or not types[0].startswith("application/x-ndjson"):
        return None
    try:
        records = _ndjson_records(response.content)
    except ValueError as e:
        _fail(case, response, f"export is not NDJSON: {e}")
    for rec in records:
        if rec.get("v") != 1 or rec.get("type") not in ("thread", "member", "message", "reaction"):
            _fail(case, response, f"export record without v=1 and a known type: {str(rec)[:200]}")
    return None


@schemathesis.check
def no_server_error(ctx, response, case):
    """No answer is a 5xx (recorded for the summary; schemathesis'
    not_a_server_error fails the run too)."""
    if response.status_code >= 500:
        _fail(case, response, f"server error {response.status_code}")
    return None


# Path parameters: half of the generated cases keep what schemathesis made
# (random strings: not found, bad input), the other half get a thread,
# message or user that exists (FUZZ_SEEDS, made by run.py for this role), so
# the routes are exercised past their 404s too.
_SEEDS = json.loads(os.environ.get("FUZZ_SEEDS") or "{}")


def _seeded(strategy, seeds):
    from hypothesis import strategies as st

    def seeded(params):
        if not isinstance(params, dict) or not any(k in seeds for k in params):
            return st.just(params)
        known = {k: (st.sampled_from(seeds[k]) if k in seeds else st.just(v)) for k, v in params.items()}
        return st.one_of(st.just(params), st.fixed_dictionaries(known))

    return strategy.flatmap(seeded)


@schemathesis.hook
def before_generate_path_parameters(context, strategy):
    return _seeded(strategy, _SEEDS)


# Query parameters likewise: `thread` (GET /v1/messages, search) and
# `author` (which a signed frontend user must match) get a real value half
# of the time.
@schemathesis.hook
def before_generate_query(context, strategy):
    seeds = {k: _SEEDS[k] for k in ("thread", "author") if k in _SEEDS}
    return _seeded(strategy, seeds)
