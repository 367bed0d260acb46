"""Opt-in: the plugin inside a real Hermes checkout ($HERMES_SOURCE), loaded by the gateway's own
plugin manager from $HERMES_HOME/plugins, against the real sidecar. Skipped without HERMES_SOURCE."""
import json
import os
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import harness

SRC = os.environ.get("HERMES_SOURCE", "")


def tearDownModule():
    harness.cleanup_binary()


@unittest.skipUnless(SRC, "HERMES_SOURCE (a Hermes checkout) not set")
class RealHermes(unittest.TestCase):
    def test_plugin_replaces_the_bundled_adapter_and_follows_the_sidecar(self):
        world = harness.World()
        self.addCleanup(world.close)
        dest = world.home / "plugins" / "wa-sidecar-whatsapp"
        shutil.copytree(harness.PLUGIN, dest, ignore=shutil.ignore_patterns("__pycache__"))
        with open(world.home / "config.yaml", "a") as f:
            f.write("plugins:\n  enabled:\n    - wa-sidecar-whatsapp\n")
        world.start()
        world.wait_connected()
        env = dict(os.environ, HERMES_HOME=str(world.home), PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1",
                   HERMES_GATEWAY_LOCK_DIR=str(world.root / "locks"))
        r = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("realgw_driver.py")), str(world.listen_port),
             str(world.bridge_port), str(world.session), str(world.state)],
            env=env, cwd=world.root, capture_output=True, text=True, timeout=60,
        )
        lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
        self.assertTrue(lines, f"driver failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        res = json.loads(lines[-1][len("RESULT "):])
        self.assertEqual(res["source"], "plugin")
        self.assertEqual(res["class"], "SidecarWhatsAppAdapter")
        self.assertTrue(res["connected"], res)
        self.assertTrue(res["saw_kill"], res)
        self.assertTrue(res["reattached"], res)
        self.assertFalse(res["own_bridge"], res)


if __name__ == "__main__":
    unittest.main()
