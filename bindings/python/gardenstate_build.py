"""cffi (API mode) builder of gardenstate._gds, the compiled layer over the C ABI.

The one source of truth is include/gardenstate.h: its declarations are read from the header
(the C preprocessor's conditionals resolved for C11, comments dropped) and given to cffi
as they are, so a new function, field or constant of the header reaches Python without a
second declaration; the C compiler checks every struct layout and constant at build time.

Beside the header's functions, the module has one gate wrapper per function taking a
`const struct gds_store *`, generated from the same declarations: gdspy_X(handle, ...) calls
gds_X(handle->store, ...) while counting the call in flight, so that

- gdspy_close(handle) marks the handle closing, waits until no call on it is in flight, then
  calls gds_close (ffi/README.md: gds_close must not overlap any other use of the handle);
  a call that starts after returns GDSPY_CLOSED;
- gdspy_before_fork() waits until no call of any handle is in flight and holds new ones until
  gdspy_after_fork() / gdspy_after_fork_child() (ffi/README.md: fork() must not happen while a thread is inside a gds_
  call); os.register_at_fork runs them, so os.fork, multiprocessing and gunicorn fork at a
  safe point.

Counting is two atomic increments and two decrements per call; calls are never serialized.
cffi releases the GIL around every call (so lock waits and wait_replicated never hold it).
The library itself is not linked: gardenstate._native loads the libgardenstate it chose
(bundled copy, GARDENSTATE_LIB, checkout, system) with RTLD_GLOBAL before importing _gds,
whose gds_ symbols resolve against it.
"""

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE.parents[1] / "include" / "gardenstate.h"

GDSPY_CLOSED = -1  # not a gds_status: the handle is closed (StoreClosedError)


def header_declarations(text: str) -> str:
    """The header's declarations as cffi's cdef wants them: comments removed, conditionals
    resolved for a C11 compiler (no C++, no C23), integer #defines as `...` (their values
    come from the compiler), other macros dropped."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"\\\n", " ", text)
    out, active = [], [True]
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            d = s[1:].split(None, 1)
            word, rest = d[0], (d[1] if len(d) > 1 else "")
            if word == "ifndef":
                # The header's #ifndef test its include guard and __cplusplus: both unset.
                if rest not in ("GARDENSTATE_H", "__cplusplus"):
                    raise SystemExit(f"gardenstate_build: unexpected #ifndef {rest}")
                active.append(active[-1])
            elif word in ("if", "ifdef"):
                # Every #if of the header tests C++ or C23: false for the C11 this builds.
                if "__cplusplus" not in rest and "__STDC_VERSION__" not in rest:
                    raise SystemExit(f"gardenstate_build: unexpected #{word} {rest}")
                active.append(False)
            elif word == "else":
                active[-1] = not active[-1] and active[-2]
            elif word == "endif":
                active.pop()
            elif word == "define" and all(active):
                m = re.match(r"(GDS_\w+)\s+(\S.*)$", rest)
                if m and re.fullmatch(r"\d+|UINT64_MAX|\(.*\)", m.group(2).strip()):
                    out.append(f"#define {m.group(1)} ...")
            continue
        if all(active):
            out.append(line)
    return "\n".join(out)


def store_functions(decls: str):
    """(return type, name, [(param type, param name)]) of every function whose first
    parameter is the store handle."""
    for m in re.finditer(r"^(\w[\w \*]*?)\s*\b(gds_\w+)\(([^)]*)\);", decls, re.M):
        ret, name, params = m.group(1).strip(), m.group(2), m.group(3)
        parts = [p.strip() for p in params.replace("\n", " ").split(",")]
        if not parts[0].startswith("const struct gds_store *"):
            continue
        rest = []
        for p in parts[1:]:
            pm = re.match(r"(.*?)(\w+)$", p)
            rest.append((pm.group(1).strip(), pm.group(2)))
        yield ret, name, rest


GATE = r"""
#include <sched.h>
#include <stdlib.h>
#include "gardenstate.h"

typedef struct gdspy_handle {
    struct gds_store *store;
    long in_flight;  /* calls on this handle in flight */
    int closing;     /* set once by gdspy_close */
} gdspy_handle;

static long gdspy_total;    /* calls of every handle in flight */
static int gdspy_forking;   /* a fork is pending: hold new calls */

/* Dekker-style, all sequentially consistent: a call counts itself, then looks at the flag;
   gdspy_before_fork sets the flag, then waits for the count to drain. */
static int gdspy_enter(gdspy_handle *h) {
    for (;;) {
        __atomic_add_fetch(&gdspy_total, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&gdspy_forking, __ATOMIC_SEQ_CST))
            break;
        __atomic_sub_fetch(&gdspy_total, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&gdspy_forking, __ATOMIC_SEQ_CST))
            sched_yield();
    }
    __atomic_add_fetch(&h->in_flight, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->closing, __ATOMIC_SEQ_CST)) {
        __atomic_sub_fetch(&h->in_flight, 1, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&gdspy_total, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    return 1;
}

static void gdspy_exit(gdspy_handle *h) {
    __atomic_sub_fetch(&h->in_flight, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&gdspy_total, 1, __ATOMIC_SEQ_CST);
}

static gdspy_handle *gdspy_wrap(struct gds_store *store) {
    gdspy_handle *h = calloc(1, sizeof *h);
    if (h == NULL) {
        gds_close(store);
        return NULL;
    }
    h->store = store;
    return h;
}

/* 1 if this call closed the handle, 0 if another had (the first waits, then closes). */
static int gdspy_close(gdspy_handle *h) {
    if (__atomic_exchange_n(&h->closing, 1, __ATOMIC_SEQ_CST))
        return 0;
    while (__atomic_load_n(&h->in_flight, __ATOMIC_SEQ_CST))
        sched_yield();
    gds_close(h->store);
    h->store = NULL;
    return 1;
}

static void gdspy_free(gdspy_handle *h) {
    free(h);
}

static void gdspy_before_fork(void) {
    __atomic_store_n(&gdspy_forking, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&gdspy_total, __ATOMIC_SEQ_CST))
        sched_yield();
}

static void gdspy_after_fork(void) {
    __atomic_store_n(&gdspy_forking, 0, __ATOMIC_SEQ_CST);
}

/* In the child only the forking thread exists, and it is in no call: a count another thread
   had raised for an instant (counting itself, then seeing the flag and backing off) when
   fork() copied the memory is dropped, or the child's next fork would wait for it forever. */
static void gdspy_after_fork_child(void) {
    __atomic_store_n(&gdspy_total, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&gdspy_forking, 0, __ATOMIC_SEQ_CST);
}
"""

GATE_CDEF = """
typedef struct gdspy_handle gdspy_handle;
#define GDSPY_CLOSED ...
gdspy_handle *gdspy_wrap(struct gds_store *store);
int gdspy_close(gdspy_handle *h);
void gdspy_free(gdspy_handle *h);
void gdspy_before_fork(void);
void gdspy_after_fork(void);
void gdspy_after_fork_child(void);
extern "Python" int gdspy_scan_entry(void *user, const struct gds_entry *entry);
"""


def build_ffi() -> FFI:
    decls = header_declarations(HEADER.read_text())
    wrappers, protos = [], []
    for ret, name, rest in store_functions(decls):
        params = ", ".join(["gdspy_handle *h"] + [f"{t} {n}" for t, n in rest])
        args = ", ".join(["h->store"] + [n for _, n in rest])
        wrapped = "gdspy" + name[3:]
        protos.append(f"{ret} {wrapped}({params});")
        wrappers.append(
            f"static {ret} {wrapped}({params}) {{\n"
            f"    if (!gdspy_enter(h)) return GDSPY_CLOSED;\n"
            f"    {ret} st = {name}({args});\n"
            f"    gdspy_exit(h);\n"
            f"    return st;\n}}\n")
    ffi = FFI()
    ffi.cdef(decls + GATE_CDEF + "\n".join(protos))
    ffi.set_source(
        "gardenstate._gds",
        f"#define GDSPY_CLOSED ({GDSPY_CLOSED})\n" + GATE + "\n".join(wrappers),
        include_dirs=[str(HEADER.parent)],
        extra_compile_args=["-O2"],
    )
    return ffi


ffibuilder = build_ffi()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE), verbose=True)
