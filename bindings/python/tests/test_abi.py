"""The binding against the header: constants, struct layouts, loading and the ABI check.

These make the Python binding a second test of the C ABI: every constant the package
hard-codes is compared with include/gardenstate.h, and every struct's size and field
offsets with what a C compiler computes from the header.
"""

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from _support import HEADER, INSTALLED, PY_ROOT, subprocess_env
import gardenstate
from gardenstate import _native as N
from gardenstate import errors


def header_text():
    return HEADER.read_text()


def header_enum_status():
    text = header_text()
    body = text[text.index("enum gds_status"):]
    body = body[: body.index("};")]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(GDS_\w+) = (\d+),", body, re.M)}


def header_defines():
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^#define (GDS_\w+) (\d+)\s*$", header_text(), re.M)
    }


class HeaderConstants(unittest.TestCase):
    def test_status_codes_match_the_header(self):
        codes = header_enum_status()
        self.assertGreater(len(codes), 25)
        for name, value in codes.items():
            self.assertEqual(getattr(N, name), value, name)

    def test_every_error_code_has_its_exception_class(self):
        for name, value in header_enum_status().items():
            if value >= 10:
                cls = errors.BY_CODE.get(value)
                self.assertIsNotNone(cls, f"{name} has no exception class")
                self.assertTrue(issubclass(cls, gardenstate.GardenstateError))
                self.assertEqual(cls.code, value)
        # and no class claims a code the header does not have
        self.assertLessEqual(set(errors.BY_CODE), set(header_enum_status().values()))

    def test_defines_match_the_header(self):
        defines = header_defines()
        for name in ("GDS_ABI_VERSION", "GDS_OPTION_EVICT", "GDS_WRITE_MODE_WRITABLE",
                     "GDS_WRITE_MODE_REPLICA", "GDS_WRITE_MODE_FENCED", "GDS_EXPIRY_NEVER",
                     "GDS_EXPIRY_AFTER", "GDS_EXPIRY_SLIDING", "GDS_CHANGE_NOP",
                     "GDS_CHANGE_SET", "GDS_CHANGE_DELETE", "GDS_CHANGE_TOUCH",
                     "GDS_CHANGE_LOCK", "GDS_CHANGE_UNLOCK", "GDS_CHANGE_EXPIRE",
                     "GDS_CHANGE_EVICT"):
            self.assertEqual(getattr(N, name), defines[name], name)
        self.assertIn("#define GDS_TTL_NEVER UINT64_MAX", header_text())
        self.assertEqual(N.GDS_TTL_NEVER, 2**64 - 1)

    def test_library_version_matches_the_header(self):
        d = header_defines()
        want = f"{d['GDS_VERSION_MAJOR']}.{d['GDS_VERSION_MINOR']}.{d['GDS_VERSION_PATCH']}"
        self.assertEqual(gardenstate.version(), want)

    def test_every_prototype_is_declared_in_the_header(self):
        text = header_text()
        for name in N._PROTOTYPES:
            self.assertRegex(text, rf"\b{name}\(", name)


@unittest.skipUnless(shutil.which("gcc"), "gcc is needed to compute the C layouts")
class StructLayouts(unittest.TestCase):
    def test_sizes_and_offsets_match_a_c_compiler(self):
        lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "gardenstate.h"',
                 "int main(void) {"]
        for cname, cls in N.STRUCTS.items():
            lines.append(f'printf("{cname} sizeof %zu\\n", sizeof(struct {cname}));')
            for field, _ in cls._fields_:
                lines.append(f'printf("{cname} {field} %zu\\n", offsetof(struct {cname}, {field}));')
        lines.append("return 0; }")
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "layout.c")
            exe = os.path.join(d, "layout")
            with open(src, "w") as f:
                f.write("\n".join(lines))
            subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(HEADER.parent), src, "-o", exe],
                           check=True)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        c = {}
        for line in out.splitlines():
            cname, field, value = line.split()
            c[(cname, field)] = int(value)
        for cname, cls in N.STRUCTS.items():
            self.assertEqual(ctypes.sizeof(cls), c[(cname, "sizeof")], f"sizeof {cname}")
            for field, _ in cls._fields_:
                self.assertEqual(getattr(cls, field).offset, c[(cname, field)], f"{cname}.{field}")


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=120)


def package_copy(d, bundle=None):
    """A copy of the package's modules in directory `d` (for PYTHONPATH), with `bundle`
    copied in as its bundled libgardenstate.so, or without one."""
    pkg = os.path.join(d, "gardenstate")
    src = os.path.dirname(gardenstate.__file__)
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    if bundle:
        shutil.copyfile(bundle, os.path.join(pkg, "libgardenstate.so"))
    return d


class Loading(unittest.TestCase):
    """The lookup order: the bundled copy, GARDENSTATE_LIB, the checkout's target/, the
    system's. Each case runs a copy of the package, so it holds for the installed package
    and for a checkout alike."""

    def test_the_bundled_copy_comes_first(self):
        if INSTALLED:  # pip put the library it built inside the package: it is the one used
            bundled = os.path.join(os.path.dirname(gardenstate.__file__), "libgardenstate.so")
            self.assertEqual(gardenstate.lib_path(), bundled)
        with tempfile.TemporaryDirectory() as d:
            package_copy(d, bundle=gardenstate.lib_path())
            r = run_python("import gardenstate; print(gardenstate.lib_path())",
                           PYTHONPATH=d, GARDENSTATE_LIB="/nonexistent/libgardenstate.so")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), os.path.join(d, "gardenstate", "libgardenstate.so"))

    def test_loads_the_repository_build_without_a_bundled_copy(self):
        r = run_python("import gardenstate; print(gardenstate.lib_path())",
                       PYTHONPATH=str(PY_ROOT), GARDENSTATE_LIB="")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip().endswith("release/libgardenstate.so"), r.stdout)

    def test_gardenstate_lib_names_the_file(self):
        path = gardenstate.lib_path()
        with tempfile.TemporaryDirectory() as d:
            r = run_python("import gardenstate; print(gardenstate.lib_path())",
                           PYTHONPATH=package_copy(d), GARDENSTATE_LIB=path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), path)

    def test_a_missing_library_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as d:
            r = run_python("""
                import gardenstate
                try:
                    gardenstate.Store.attach("x")
                except gardenstate.LibraryNotFoundError as e:
                    assert isinstance(e, ImportError)
                    print("refused:", e)
                """, PYTHONPATH=package_copy(d),
                GARDENSTATE_LIB="/nonexistent/libgardenstate.so")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("refused: cannot load libgardenstate from '/nonexistent/libgardenstate.so'",
                      r.stdout)
        self.assertIn("GARDENSTATE_LIB", r.stdout)

    @unittest.skipUnless(shutil.which("gcc"), "gcc is needed to build a library of another ABI")
    def test_another_abi_version_is_refused_before_any_other_call(self):
        # A library whose only symbol is gds_abi_version, returning 2: if the binding looked
        # up or called anything else first, this would fail with AttributeError instead.
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "fake.c")
            lib = os.path.join(d, "libgardenstate.so")
            with open(src, "w") as f:
                f.write("unsigned int gds_abi_version(void) { return 2; }\n")
            subprocess.run(["gcc", "-shared", "-fPIC", src, "-o", lib], check=True)
            r = run_python("""
                import gardenstate
                for attempt in range(2):
                    try:
                        gardenstate.Store.open("x")
                    except gardenstate.AbiMismatchError as e:
                        print("refused:", e)
                """, PYTHONPATH=package_copy(os.path.join(d, "py")), GARDENSTATE_LIB=lib)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("refused:"), 2, r.stdout)  # refused every time
        self.assertIn("has ABI version 2", r.stdout)
        self.assertIn("written for ABI version 1", r.stdout)

    def test_the_core_imports_without_flask(self):
        r = run_python("""
            import sys
            sys.modules["flask"] = None  # as if Flask were not installed
            import gardenstate
            print(gardenstate.Store.__name__)
            try:
                import gardenstate.flask
            except ImportError:
                print("flask provider needs flask")
            """)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["Store", "flask", "provider", "needs", "flask"])


if __name__ == "__main__":
    unittest.main()
