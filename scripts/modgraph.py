"""Usage: python3 scripts/modgraph.py [src]. Exits 1 when the modules import each other in a loop.

Prints the import graph between wssd's top-level modules (a file or folder under src/) and
its cycles. A reference is any `crate::NAME` in a module's code (comments and doc lines
skipped); re-exports at the crate root (`crate::Connection`) are resolved through lib.rs."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "src"
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"): continue
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"): continue
        text = open(os.path.join(dirpath, f)).read()
        text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
        # tests are not the module's dependencies
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
        if rel.endswith("tests.rs"): continue
        mods.setdefault(top, "")
        mods[top] += text
lib = open(os.path.join(root, "lib.rs")).read()
reexport = {}
for m in re.finditer(r"pub use (\w+)::\{?([^;]+)\}?;", lib):
    for name in re.findall(r"\w+", m.group(2)):
        reexport[name] = m.group(1)
edges = {m: set() for m in mods}
for m, text in mods.items():
    for name in re.findall(r"crate::(\w+)", text):
        target = name if name in mods else reexport.get(name)
        if target and target != m and target in mods:
            edges[m].add(target)
    for block in re.findall(r"use crate::\{([^;]*)\};", text, re.S):
        for name in re.findall(r"(?:^|[,{\s])(\w+)", block):
            target = name if name in mods else reexport.get(name)
            if target and target != m and target in mods:
                edges[m].add(target)
# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index: strong(v)
for m in sorted(edges):
    print(f"{m} -> {', '.join(sorted(edges[m]))}")
cycles = [c for c in sccs if len(c) > 1]
print("import loops:", cycles if cycles else "none")
sys.exit(1 if cycles else 0)
