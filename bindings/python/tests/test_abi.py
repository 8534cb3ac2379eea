"""The binding against the header: constants, gate wrappers, loading and the ABI check.

The compiled binding (gardenstate._gds) is built from include/gardenstate.h itself, so the C
compiler already checked its structs and prototypes; here every constant the package
hard-codes (to import without the library) is compared with the header, and every store
function of the header must have its gate wrapper.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from _support import HEADER, INSTALLED, PY_ROOT, REPO, subprocess_env
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
                     "GDS_CHANGE_EVICT", "GDS_ROLE_PRIMARY", "GDS_ROLE_STANDBY",
                     "GDS_ROLE_FENCED", "GDS_ROLE_LEASE_LAPSED"):
            self.assertEqual(getattr(N, name), defines[name], name)
        self.assertIn("#define GDS_TTL_NEVER UINT64_MAX", header_text())
        self.assertEqual(N.GDS_TTL_NEVER, 2**64 - 1)

    def test_library_version_matches_the_header(self):
        d = header_defines()
        want = f"{d['GDS_VERSION_MAJOR']}.{d['GDS_VERSION_MINOR']}.{d['GDS_VERSION_PATCH']}"
        self.assertEqual(gardenstate.version(), want)

    def test_every_store_function_has_its_gate_wrapper(self):
        lib = N.lib()
        names = re.findall(r"\bgds_status (gds_\w+)\(const struct gds_store \*store",
                           header_text())
        self.assertGreater(len(names), 20)
        for name in names:
            self.assertTrue(hasattr(lib, "gdspy" + name[3:]), name)
        self.assertEqual(lib.GDSPY_CLOSED, N.GDSPY_CLOSED)


def run_python(code, **env):
    # cwd "/": python -c puts the working directory first on sys.path, which must not
    # shadow the package under test with a checkout's.
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=120, cwd="/")


def package_copy(d, bundle=None):
    """A copy of the package's modules in directory `d` (for PYTHONPATH), with `bundle`
    copied in as its bundled libgardenstate.so, or without one."""
    pkg = os.path.join(d, "gardenstate")
    src = os.path.dirname(gardenstate.__file__)
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("libgardenstate.so", "__pycache__"))
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
        target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
        built = os.path.join(target, "release", "libgardenstate.so")
        if not os.path.exists(built):
            self.skipTest(f"{built} was not built")
        with tempfile.TemporaryDirectory() as d:
            # A checkout's layout: <repo>/bindings/python/gardenstate, its target/ moved.
            r = run_python("import gardenstate; print(gardenstate.lib_path())",
                           PYTHONPATH=package_copy(os.path.join(d, "bindings", "python")),
                           GARDENSTATE_LIB="", CARGO_TARGET_DIR=target)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), built)

    def test_a_checkout_without_the_compiled_module_builds_it_once_into_a_cache(self):
        with tempfile.TemporaryDirectory() as d:
            py = os.path.join(d, "bindings", "python")
            os.makedirs(os.path.join(d, "include"))
            shutil.copyfile(HEADER, os.path.join(d, "include", "gardenstate.h"))
            shutil.copytree(os.path.dirname(gardenstate.__file__), os.path.join(py, "gardenstate"),
                            ignore=shutil.ignore_patterns("*.so", "_gds.*", "__pycache__"))
            shutil.copyfile(PY_ROOT / "gardenstate_build.py",
                            os.path.join(py, "gardenstate_build.py"))
            cache = os.path.join(d, "cache")
            code = """
                import gardenstate
                s = gardenstate.Store.open("abi-cache-build")
                s.set(b"k", b"v"); print(s.get(b"k").decode()); s.close()
                gardenstate.destroy("abi-cache-build")
                import gardenstate._gds as g; print(g.__file__)
                """
            for _ in range(2):  # built by the first run, reused by the second
                r = run_python(code, PYTHONPATH=py, XDG_CACHE_HOME=cache,
                               GARDENSTATE_LIB=gardenstate.lib_path())
                self.assertEqual(r.returncode, 0, r.stderr)
                value, path = r.stdout.split()
                self.assertEqual(value, "v")
                self.assertTrue(path.startswith(os.path.join(cache, "gardenstate")), path)
            self.assertEqual(len(os.listdir(os.path.join(cache, "gardenstate"))), 1)

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
