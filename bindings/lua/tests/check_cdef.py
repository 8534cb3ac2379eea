#!/usr/bin/env python3
"""Fails if lib/gardenstate.lua's ffi.cdef declarations or constants drift from the header.

Every declaration in the module's CDEF_ABI and CDEF blocks (split at top-level `;`) must
appear in include/gardenstate.h, compared with comments and preprocessor lines removed and
whitespace collapsed; every GDS_* constant the module defines must have the header's value.
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[3]
lua = (root / "bindings/lua/lib/gardenstate.lua").read_text()
header = (root / "include/gardenstate.h").read_text()


def norm(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*([(){};,*])\s*", r"\1", text)
    return text.strip()


h = norm(header)
failures = []
decls = 0
blocks = re.findall(r"local CDEF(?:_ABI)? = \[\[(.*?)\]\]", lua, flags=re.S)
if len(blocks) != 2:
    failures.append(f"expected the CDEF_ABI and CDEF blocks in gardenstate.lua, found {len(blocks)}")
for block in blocks:
    depth, cur = 0, ""
    for ch in block:
        cur += ch
        depth += ch == "{"
        depth -= ch == "}"
        if ch == ";" and depth == 0:
            d = norm(cur)
            decls += 1
            if d not in h:
                failures.append("not in include/gardenstate.h: " + d)
            cur = ""
    if cur.strip():
        failures.append("unterminated declaration: " + cur.strip())

consts = 0
hconst = {m[0]: int(m[1]) for m in re.findall(r"#define (GDS_\w+) (\d+)\b", header)}
hconst.update({m[0]: int(m[1]) for m in re.findall(r"^\s+(GDS_\w+) = (\d+),", header, flags=re.M)})
for name, val in re.findall(r"\b(GDS_\w+) = (\d+)", lua):
    consts += 1
    if hconst.get(name) != int(val):
        failures.append(f"{name} = {val} in gardenstate.lua, {hconst.get(name)} in the header")
status_in_header = set(re.findall(r"^\s+(GDS_(?:OK|NOT_FOUND|FEED_\w+|ERR_\w+)) = ", header, flags=re.M))
status_in_lua = set(re.findall(r"\b(GDS_(?:OK|NOT_FOUND|FEED_\w+|ERR_\w+)) = ", lua))
for missing in sorted(status_in_header - status_in_lua):
    failures.append(f"status {missing} of the header is missing from gardenstate.lua")

if failures:
    print("cdef drift:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"cdef check: {decls} declarations and {consts} constants match include/gardenstate.h")
