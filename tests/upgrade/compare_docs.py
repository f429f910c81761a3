#!/usr/bin/env python3
"""Compares the documents captured before an extension upgrade with those
captured after it (tests/upgrade/run.sh). Each input line is
"<n>\t<kind>\t<label>\t<document or ERROR sqlstate>".

How each kind must match (a newer release may add keys to a Thread, a page
or the stats, never change or drop one; every Message document must be
unchanged):

  message, versions, reactions, replies   identical
  thread, stats                           every key of the old document, same value
  threads ({"threads":[Thread…]})          same threads in the same order, each as a thread
  page (list_messages)                    "messages" identical; other old keys same value,
                                          except that the page cursors of 0.2.0 are opaque
                                          positions ("c1.<seq>.<tag>") where 0.1.0 gave the
                                          ids of the page's first and last messages
  errors ("ERROR <sqlstate>")             identical

Exits 1 and prints every mismatch (the first few in full) when any differ;
exits 2 when the old release's own capture holds errors other than "not
found"/"not allowed" (a broken query in fill.sql would otherwise compare
equal on both sides).
"""
import json
import sys


def load(path):
    docs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            n, kind, label, doc = line.rstrip("\n").split("\t", 3)
            docs[int(n)] = (kind, label, doc)
    return docs


def differences(old, new, path="$"):
    """Where two JSON values differ, as "path: what" lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = [f"{path}.{k}: gone (was {old[k]!r})" for k in old if k not in new]
        found += [f"{path}.{k}: new ({new[k]!r})" for k in new if k not in old]
        for k in old:
            if k in new:
                found += differences(old[k], new[k], f"{path}.{k}")
        return found
    if isinstance(old, list) and isinstance(new, list):
        found = [] if len(old) == len(new) else [f"{path}: {len(old)} items became {len(new)}"]
        for i, (o, n) in enumerate(zip(old, new)):
            found += differences(o, n, f"{path}[{i}]")
        return found
    return [] if old == new else [f"{path}: {old!r} became {new!r}"]


def identical(old, new):
    found = differences(old, new)
    return found[:3] + ([f"... {len(found) - 3} more"] if len(found) > 3 else [])


def subset_problems(old, new, where):
    """Keys of the old object that the new one lacks or holds differently."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"{where}: {old!r} became {new!r}"]
    problems = []
    for key, value in old.items():
        if key not in new:
            problems.append(f"{where}: key {key!r} is gone (was {value!r})")
        elif new[key] != value:
            problems.append(f"{where}: key {key!r} was {value!r}, now {new[key]!r}")
    return problems


def problems_of(kind, old_text, new_text):
    if old_text.startswith("ERROR") or new_text.startswith("ERROR"):
        return [] if old_text == new_text else [f"{old_text} became {new_text[:300]}"]
    old, new = json.loads(old_text), json.loads(new_text)
    if kind in ("message", "versions", "reactions", "replies"):
        return identical(old, new)
    if kind in ("thread", "stats"):
        return subset_problems(old, new, kind)
    if kind == "threads":
        # 0.2.0 lists a user's threads by membership, newest activity first
        # (0.1.0: threads they authored, newest created first), and the
        # upgrade makes authors of messages in others' threads members: a
        # listing may gain such threads (role member) and change order, but
        # loses none of its threads unless a page limit pushed them out.
        olds, news = old.get("threads", []), new.get("threads", [])
        old_ids = [t.get("id") for t in olds]
        by_id = {t.get("id"): t for t in news}
        problems = subset_problems({k: v for k, v in old.items() if k != "threads"}, new, "list")
        for n in news:
            if n.get("id") not in old_ids and n.get("role") != "member":
                problems.append(f"thread {n.get('id')} appeared without a member role: {n!r}")
        missing = [i for i in old_ids if i not in by_id]
        if missing and len(news) < len(olds):
            problems.append(f"thread ids {old_ids} became {[t.get('id') for t in news]}")
        for o in olds:
            if o.get("id") in by_id:
                problems += subset_problems(o, by_id[o.get("id")], f"thread {o.get('id')}")
        return problems
    if kind == "page":
        problems = identical(old.get("messages"), new.get("messages"))
        old_rest = {k: v for k, v in old.items() if k != "messages"}
        new_rest = dict(new)
        msgs = old.get("messages") or []
        op, np = old.get("pagination"), new.get("pagination")
        if isinstance(op, dict) and isinstance(np, dict) and msgs:
            # 0.1.0 cursors were the ids of the page's ends; 0.2.0 cursors
            # are opaque positions of the same ends (their seq is checked by
            # the page reads after the upgrade, which accept both forms).
            ends = {"before": msgs[0].get("id"), "after": msgs[-1].get("id")}
            op, np = dict(op), dict(np)
            for k, end in ends.items():
                if op.get(k) == end and str(np.get(k, "")).startswith("c1."):
                    op.pop(k)
                    np.pop(k)
            old_rest["pagination"], new_rest["pagination"] = op, np
        return problems + subset_problems(old_rest, new_rest, "page")
    return [f"unknown kind {kind!r}"]


# Errors a document query may answer with on the old release: not found
# (deleted things) and not allowed (strangers). Any other error there is a
# mistake in the harness's queries, which would otherwise compare equal.
EXPECTED_OLD_ERRORS = ("ERROR P0002", "ERROR 42501")


def check_old_capture(before):
    problems = [f"{label}: {doc}" for kind, label, doc in before.values()
                if doc.startswith("ERROR") and doc not in EXPECTED_OLD_ERRORS]
    answered = {kind for kind, label, doc in before.values() if not doc.startswith("ERROR")}
    missing = {"message", "versions", "reactions", "replies", "thread", "threads", "page", "stats"} - answered
    if missing:
        problems.append(f"no document of kind {sorted(missing)} was read")
    for p in problems[:20]:
        print(f"HARNESS ERROR (old release capture): {p}")
    return not problems


def main():
    before, after = load(sys.argv[1]), load(sys.argv[2])
    if not check_old_capture(before):
        sys.exit(2)
    failures = []
    for n, (kind, label, old_text) in sorted(before.items()):
        if n not in after:
            failures.append((label, ["not captured after the upgrade"], old_text, ""))
            continue
        new_text = after[n][2]
        problems = problems_of(kind, old_text, new_text)
        if problems:
            failures.append((label, problems, old_text, new_text))
    # Totals first, then mismatches per kind and variant (labels read
    # "<kind> <variant> <object>", and the variant usually names the cause,
    # e.g. "message author"), then each mismatch, the first few in full.
    print(f"{len(before)} documents compared, {len(failures)} mismatches")
    groups = {}
    for label, *_ in failures:
        group = " ".join(label.split()[:2])
        groups[group] = groups.get(group, 0) + 1
    for group, count in sorted(groups.items()):
        print(f"  {count} mismatches of {group}")
    for i, (label, problems, old_text, new_text) in enumerate(failures):
        print(f"MISMATCH {label}: " + "; ".join(problems)[:2000])
        if i < 3:
            print(f"  before: {old_text[:3000]}\n  after:  {new_text[:3000]}")
    sys.exit(1 if failures or not before else 0)


if __name__ == "__main__":
    main()
