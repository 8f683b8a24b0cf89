#!/usr/bin/env python3
"""Lists the functions of herd-*/src longer than 60 lines (tests aside), longest first.

A function's length runs from its `fn` line to its closing brace. Code under `#[cfg(test)]` and in
`tests.rs` files is left out. Comments, strings, chars and lifetimes are skipped when braces are
counted, so a brace in a string or a comment does not end a function.

    .ci/fn-lengths.py              # the list, then the counts over 60 and over 100
    .ci/fn-lengths.py --max 100    # also fails (exit 1) if any function is longer than 100 lines
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")
IMPL = re.compile(r"^\s*(?:unsafe\s+)?impl\b(?:<[^{]*?>)?\s+(?:[\w:<>, &']+\s+for\s+)?([\w:]+)")


def strip(text):
    """`text` with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
            continue
        m = re.match(r'b?r(#*)"', text[i:i + 10])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
            continue
        if c == "'":
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:i + 12])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def block_end(lines, start):
    """The index of the line closing the first block opened at or after line `start`, or None
    when the item ends with `;` before any block opens."""
    depth, opened = 0, False
    for k in range(start, len(lines)):
        for ch in lines[k]:
            if ch == "{":
                depth, opened = depth + 1, True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return k
            elif ch == ";" and not opened and depth == 0:
                return None
    return None


def functions(path):
    lines = strip(path.read_text()).split("\n")
    skip_until = -1
    impl_name, impl_end = None, -1
    k = 0
    while k < len(lines):
        line = lines[k]
        if k > impl_end:
            impl_name = None
        if re.match(r"^\s*#\[cfg\(test\)\]", line):
            end = block_end(lines, k + 1)
            if end is not None:
                k = end + 1
                continue
        m = IMPL.match(line)
        if m:
            end = block_end(lines, k)
            if end is not None:
                impl_name, impl_end = m.group(1).split("::")[-1], end
        m = FN.match(line)
        if m and k > skip_until:
            end = block_end(lines, k)
            if end is not None:
                name = f"{impl_name}::{m.group(1)}" if impl_name else m.group(1)
                yield name, k + 1, end - k + 1
        k += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, help="fail if a function is longer than this")
    ap.add_argument("--over", type=int, default=60, help="list functions longer than this")
    args = ap.parse_args()
    found = []
    for path in sorted(ROOT.glob("herd-*/src/**/*.rs")):
        if path.name == "tests.rs" or "tests" in path.relative_to(ROOT).parts[2:-1]:
            continue
        for name, line, length in functions(path):
            found.append((length, f"{path.relative_to(ROOT)}:{line}", name))
    found.sort(key=lambda f: (-f[0], f[1]))
    for length, where, name in found:
        if length > args.over:
            print(f"{length:5}  {name}  {where}")
    over60 = sum(1 for f in found if f[0] > 60)
    over100 = sum(1 for f in found if f[0] > 100)
    print(f"functions: {len(found)}, over 60 lines: {over60}, over 100 lines: {over100}")
    if args.max is not None:
        too_long = [f for f in found if f[0] > args.max]
        if too_long:
            print(f"{len(too_long)} functions over {args.max} lines", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
