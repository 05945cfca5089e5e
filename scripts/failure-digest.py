#!/usr/bin/env python3
"""Prints a short digest of a failed cargo-nextest run from its captured output: each failed or
timed-out test, the place it panicked and the first line of its panic message (the test's
expectation). scripts/test.sh calls it so that the last lines of a CI log name the cause."""
import re
import sys

text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
lines = text.splitlines()

failed = []  # nextest's own verdict lines, e.g. "FAIL [ 12.3s] fsfax::soak name"
verdict = re.compile(r"^\s*(FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|LEAK-FAIL)\s+\[\s*[0-9.]+s\]\s+(?:\(\d+/\d+\)\s+)?(\S+)\s+(\S+)")
for line in lines:
    m = verdict.match(line)
    if m:
        entry = (m.group(1), f"{m.group(2)} {m.group(3)}")
        if entry not in failed:
            failed.append(entry)

panics = {}  # test name -> (location, first line of the message)
panic = re.compile(r"thread '([^']+)'(?: \(\d+\))? panicked at ([^\s]+?):?$")
for i, line in enumerate(lines):
    m = panic.search(line.strip())
    if m and m.group(1) not in panics:
        first = lines[i + 1].strip() if i + 1 < len(lines) else ""
        panics[m.group(1)] = (m.group(2), first)

if not failed and not panics:
    sys.exit(0)
print("test.sh: what failed, in short (each test's full output is above):")
for kind, name in failed:
    test = name.split()[-1]
    where, first = panics.pop(test, ("", ""))
    detail = f" at {where}: {first}" if where else ""
    print(f"  {kind} {name}{detail}")
for test, (where, first) in panics.items():
    print(f"  panic in {test} at {where}: {first}")
