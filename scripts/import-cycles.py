#!/usr/bin/env python3
"""Finds import circles between the modules of each crate in the workspace.

A module is a file under src/ (`a/b.rs` and `a/b/mod.rs` are `a::b`); an
edge A -> B is any `crate::B…` path (a `use` line or an inline path) in A's
file, or `super::…` resolved to B. Submodules of one parent may use their
parent (`super::`), and a parent its children: only edges between modules
that are not ancestor and descendant count. Prints every circle (strongly
connected group of two or more modules) and exits 1 when there is one.

Usage: scripts/import-cycles.py [CRATE_DIR...]   (default: every crate)
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def crates():
    for cargo in sorted(ROOT.glob("**/Cargo.toml")):
        if "target" in cargo.parts or cargo.parent == ROOT:
            continue
        if (cargo.parent / "src").is_dir():
            yield cargo.parent


def modules(src: Path):
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        mods[tuple(parts)] = f
    return mods


PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::\w+)*)::\{([^;]*)\}", re.S)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def resolve(base, segs, mods):
    """The longest module prefix of base + segs."""
    path = list(base) + segs
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()


def edges(mods):
    out = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip_comments(f.read_text())
        # cfg(test) modules are tests of the module, not its imports.
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests", text)[0]
        found = []
        for kind, rest in PATH.findall(text):
            found.append((kind, [s for s in rest.split("::") if s]))
        for kind, rest, group in USE_GROUP.findall(text):
            prefix = [s for s in rest.split("::") if s]
            for item in re.findall(r"\b\w+\b", group):
                found.append((kind, prefix + [item]))
        for kind, segs in found:
            if kind == "crate":
                base = ()
            else:
                # `super` of a::b (a/b.rs or a/b/mod.rs) is a.
                base = m[:-1]
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
            target = resolve(base, segs, mods)
            related = target[: len(m)] == m or m[: len(target)] == target
            if not related:
                out[m].add(target)
    return out


def circles(graph):
    index, low, stack, on, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                result.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return result


def main():
    dirs = [Path(a).resolve() for a in sys.argv[1:]] or list(crates())
    bad = 0
    for d in dirs:
        mods = modules(d / "src")
        for group in circles(edges(mods)):
            bad += 1
            names = ", ".join("::".join(m) or "(root)" for m in group)
            print(f"{d.relative_to(ROOT)}: import circle: {names}")
    if bad:
        sys.exit(1)
    print(f"no import circles in {len(dirs)} crates")


if __name__ == "__main__":
    main()
