#!/usr/bin/python3
"""`meson install` installs the Python module where python3 imports it from, and the installed
module finds the installed library by itself.

Usage: test_install.py BUILD_DIR

Installs BUILD_DIR into a temporary --destdir (meson install --no-rebuild), then imports simdattn
in a fresh interpreter whose only addition to sys.path is the staged module directory (standing
in for the real one, which the staging root hides): no SIMDATTN_LIBRARY, run outside the checkout.
It must load the staged library, not the build tree's, and compute a softmax. For a system prefix
(/usr, /usr/local) the module's install directory must also be on this interpreter's sys.path,
so that after a real install no sys.path edit is needed."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

BUILD = os.path.abspath(sys.argv.pop(1)) if len(sys.argv) > 1 else None
SYSTEM_PREFIXES = ("/usr", "/usr/local")

# Runs in the child: what was loaded, and softmax([0, 1]) against float64 e^x / sum e^x.
CHILD = """
import json, math, simdattn
import numpy as np
y = simdattn.softmax(np.array([[0.0, 1.0]], dtype=np.float32))
want = [1 / (1 + math.e), math.e / (1 + math.e)]
print(json.dumps({"module": simdattn.__file__, "library": simdattn._lib._name,
                  "error": max(abs(float(a) - b) for a, b in zip(y[0], want))}))
"""
# softmax of 2 floats: exp within 2 ulp, one sum and one division: a few float32 ulps of 1.
TOLERANCE = 8 * 2.0 ** -24


def meson(*args):
    return subprocess.run(["meson", *args], capture_output=True, text=True, check=True).stdout


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if BUILD is None:
            raise unittest.SkipTest("usage: test_install.py BUILD_DIR")
        installed = json.loads(meson("introspect", "--installed", BUILD))
        cls.module = next((dst for src, dst in installed.items()
                           if src.endswith(os.path.join("tools", "python", "simdattn.py"))), None)
        cls.library = next((dst for src, dst in installed.items()
                            if os.path.basename(src).startswith("libsimdattn.so")), None)
        cls.prefix = json.loads(meson("introspect", "--buildoptions", BUILD))
        cls.prefix = next(o["value"] for o in cls.prefix if o["name"] == "prefix")

    def test_module_and_library_are_installed(self):
        self.assertIsNotNone(self.module, "meson install does not install simdattn.py")
        self.assertIsNotNone(self.library, "meson install does not install libsimdattn.so")

    def test_import_from_staged_install(self):
        self.assertIsNotNone(self.module)
        with tempfile.TemporaryDirectory() as stage:
            meson("install", "-C", BUILD, "--no-rebuild", "--quiet", "--destdir", stage)
            module_dir = stage + os.path.dirname(self.module)
            env = {k: v for k, v in os.environ.items() if k not in ("SIMDATTN_LIBRARY", "PYTHONPATH")}
            env["PYTHONPATH"] = module_dir
            r = subprocess.run([sys.executable, "-c", CHILD], cwd=stage, env=env,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            got = json.loads(r.stdout.strip().splitlines()[-1])
            self.assertEqual(os.path.realpath(got["module"]),
                             os.path.realpath(os.path.join(module_dir, "simdattn.py")))
            self.assertEqual(os.path.realpath(got["library"]),
                             os.path.realpath(stage + self.library))
            self.assertLessEqual(got["error"], TOLERANCE)

    def test_system_prefix_module_dir_is_searched(self):
        if self.prefix not in SYSTEM_PREFIXES:
            self.skipTest(f"prefix {self.prefix} is not a system prefix")
        self.assertIsNotNone(self.module)
        path = [os.path.normpath(p) for p in sys.path]
        self.assertIn(os.path.normpath(os.path.dirname(self.module)), path)


if __name__ == "__main__":
    unittest.main()
