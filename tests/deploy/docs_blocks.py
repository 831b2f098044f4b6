#!/usr/bin/env python3
"""Prints the shell script the docs test runs: every fenced block preceded by a
`<!-- docs-test -->` (or `<!-- docs-test: before=HOOK -->`) line of a Markdown file, in order,
each announced with its line number, a `before=` hook called first."""
import re
import sys

lines = open(sys.argv[1]).read().split("\n")
out = []
i = 0
n = 0
while i < len(lines):
    m = re.fullmatch(r"<!-- docs-test(?:: before=([a-z0-9_]+))? -->", lines[i].strip())
    if not m:
        i += 1
        continue
    j = i + 1
    if j >= len(lines) or not lines[j].startswith("```"):
        sys.exit(f"line {i + 1}: docs-test marker not followed by a fenced block")
    k = j + 1
    while k < len(lines) and not lines[k].startswith("```"):
        k += 1
    n += 1
    out.append(f"docs_block {n} {j + 1}")
    if m.group(1):
        out.append(m.group(1))
    out.extend(lines[j + 1:k])
    i = k + 1
if n == 0:
    sys.exit("no docs-test blocks")
print("\n".join(out))
print(f"docs_done {n}")
