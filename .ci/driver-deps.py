#!/usr/bin/env python3
"""Lists which modules of herd-server/src/driver/ use which, and fails on an import cycle.

A module uses another when its code (tests aside) names it: `crate::driver::a::b`, `super::x`, or,
in a `mod.rs`, a child module by name (`live::events`). A path is resolved to the longest module
it names, so `crate::driver::admin::guard::AdminGuard` uses `admin::guard`, not `admin`.

    .ci/driver-deps.py          # the uses of each module, then the cycles (exit 1 if any)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = ROOT / "herd-server" / "src" / "driver"


def module_of(path):
    """`admin::live` for driver/admin/live.rs, `admin` for driver/admin/mod.rs, `` for mod.rs."""
    rel = path.relative_to(DRIVER).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def code(text):
    """`text` without comments and without its `#[cfg(test)]` modules."""
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", text, re.M)
    return text[: cut.start()] if cut else text


def expand(prefix, rest):
    """The paths of `prefix::rest`, where `rest` may be a `{a, b::c}` group (one level)."""
    if rest.startswith("{"):
        inner = rest[1 : rest.find("}")]
        return [f"{prefix}::{p.strip()}" for p in inner.split(",") if p.strip()]
    return [f"{prefix}::{rest}"]


def main():
    files = {module_of(p): p for p in DRIVER.rglob("*.rs")}
    modules = set(files)
    uses = {m: set() for m in modules}
    for mod, path in files.items():
        text = code(path.read_text())
        parent = mod.rsplit("::", 1)[0] if "::" in mod else ""
        # The directory's own path, to resolve a child named in a mod.rs.
        here = mod if path.name == "mod.rs" else parent
        paths = []
        for m in re.finditer(r"crate::driver::(\{[^}]*\}|[\w:]+)", text):
            paths += [p[len("driver::") :] for p in expand("driver", m.group(1))]
        for m in re.finditer(r"\bsuper::(\{[^}]*\}|[\w:]+)", text):
            base = here.rsplit("::", 1)[0] if path.name == "mod.rs" and "::" in here else (
                "" if path.name == "mod.rs" else parent
            )
            for p in expand("x", m.group(1)):
                p = p[2:]
                paths.append(f"{base}::{p}" if base else p)
        if path.name == "mod.rs":
            for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
                if re.search(rf"(?<![\w:]){child}::", text):
                    paths.append(f"{here}::{child}" if here else child)
        for p in paths:
            parts = p.split("::")
            for n in range(len(parts), 0, -1):
                target = "::".join(parts[:n])
                if target in modules:
                    if target != mod:
                        uses[mod].add(target)
                    break
    for mod in sorted(uses):
        print(f"{mod or '(driver)'}: {', '.join(sorted(uses[mod])) or '-'}")
    cycles = find_cycles(uses)
    for c in cycles:
        print("cycle among: " + ", ".join(c))
    print(f"modules: {len(modules)}, cycles: {len(cycles)}")
    return 1 if cycles else 0


def find_cycles(uses):
    """The strongly connected components of more than one module (Tarjan), each as a list."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(uses.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(uses):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
