#!/usr/bin/env python3
"""Copy the benchmark tables into README.md: every `<!-- bench/results/X.md -->` marker
is followed by that file's content (up to and including its closing "vs X = ..." line).
Run after `tools/dev.sh bench ...`; `--check` exits 1 if README is out of date."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- (bench/results/[\w.-]+\.md) -->$")


def sync(text):
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        table = (ROOT / m.group(1)).read_text().rstrip("\n").split("\n")
        out.extend(table)
        while i < len(lines) and not lines[i].startswith("vs X = "):  # skip the old copy
            i += 1
        i += 1
    return "\n".join(out)


def main():
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = sync(old)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == old else 1)
    readme.write_text(new)


if __name__ == "__main__":
    main()
