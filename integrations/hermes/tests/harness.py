"""Real processes for the tests: the sidecar built from this repository, running its simulated
bridge behind a stand-in `node`, on 127.0.0.1 and free ports. Everything started is stopped."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PLUGIN = HERE.parent / "plugin"
_BIN = None
_BUILD_DIR = None


def sidecar_binary():
    """Build the sidecar once per test run ($WA_SIDECAR_BIN reuses a built one)."""
    global _BIN, _BUILD_DIR
    if os.environ.get("WA_SIDECAR_BIN"):
        return os.environ["WA_SIDECAR_BIN"]
    if _BIN is None:
        _BUILD_DIR = tempfile.mkdtemp(prefix="wa-sidecar-pytest-bin-")
        out = os.path.join(_BUILD_DIR, "wa-sidecar")
        subprocess.run(["go", "build", "-o", out, "./cmd/wa-sidecar"], cwd=REPO, check=True)
        _BIN = out
    return _BIN


def cleanup_binary():
    """Remove the built sidecar; a later test module builds it again."""
    global _BIN, _BUILD_DIR
    if _BUILD_DIR:
        shutil.rmtree(_BUILD_DIR, ignore_errors=True)
    _BIN = _BUILD_DIR = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class World:
    """A Hermes home with bridge files, a state dir, and at most one sidecar on them."""

    def __init__(self, paired=True):
        self.root = Path(tempfile.mkdtemp(prefix="wa-sidecar-pytest-"))
        self.home = self.root / "home"
        self.state = self.root / "state"
        self.session = self.home / "platforms" / "whatsapp" / "session"
        bridge = self.home / "hermes-agent" / "scripts" / "whatsapp-bridge"
        (bridge / "node_modules").mkdir(parents=True)
        self.session.mkdir(parents=True)
        self.state.mkdir(mode=0o700)
        (bridge / "bridge.js").write_text("// stand-in bridge\n")
        (bridge / "package.json").write_text('{"name":"bridge"}\n')
        stamp = hashlib.sha256((bridge / "package.json").read_bytes()).hexdigest()[:16]
        (bridge / "node_modules" / ".hermes-pkg-hash").write_text(stamp)
        if paired:
            (self.session / "creds.json").write_text('{"me":{"id":"1@s.whatsapp.net"}}')
        self.listen_port = free_port()
        self.bridge_port = free_port()
        (self.home / "config.yaml").write_text(
            f"platforms:\n  whatsapp:\n    extra:\n      bridge_port: {self.bridge_port}\n"
        )
        node = self.root / "node"
        node.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = "--version" ]; then echo v20.0.0; exit 0; fi\n'
            'script="$1"; shift\n'
            f'exec {sidecar_binary()} simulate-bridge "$@" --script-hash-of "$script" $WA_SIM_ARGS\n'
        )
        node.chmod(0o755)
        self.node = node
        self.proc = None
        self.log = None

    def extra(self, **kw):
        """The platform settings a gateway would give the plugin for this world."""
        e = {"bridge_port": self.bridge_port, "session_path": str(self.session),
             "sidecar_state_dir": str(self.state)}
        e.update(kw)
        return e

    def start(self, sim_args="--connect-after 200ms"):
        assert self.proc is None
        env = dict(os.environ, WA_SIM_ARGS=sim_args, HERMES_HOME=str(self.home))
        env.pop("WA_SIDECAR_TOKEN", None)
        self.log = open(self.root / "sidecar.log", "ab")
        self.proc = subprocess.Popen(
            [sidecar_binary(), "run", "--hermes-home", str(self.home), "--state-dir", str(self.state),
             "--listen", f"127.0.0.1:{self.listen_port}", "--node", str(self.node),
             "--health-period", "250ms", "--backoff-initial", "300ms", "--log-format", "text",
             "--bridge-output", "off"],
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_for(lambda: self.status() is not None, 10, "sidecar status server")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self.log.close()

    def close(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def status(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.listen_port}/v1/status", timeout=2) as r:
                return json.load(r)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def bridge_pid(self):
        st = self.status() or {}
        return st.get("pid", 0)

    def wait_for(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; sidecar log:\n{self.tail()}")

    def wait_connected(self, timeout=10):
        def ok():
            st = self.status() or {}
            return st.get("state") == "running" and (st.get("details") or {}).get("whatsapp", {}).get("connection") == "connected"
        self.wait_for(ok, timeout, "the bridge to connect")

    def tail(self):
        try:
            return (self.root / "sidecar.log").read_text()[-3000:]
        except OSError:
            return ""


def load_plugin(name="wa_sidecar_whatsapp"):
    """Import the plugin as the gateway does: hermes_plugins.<slug>, from its directory."""
    import importlib.util
    import types
    if "hermes_plugins" not in sys.modules:
        ns = types.ModuleType("hermes_plugins")
        ns.__path__ = []
        sys.modules["hermes_plugins"] = ns
    modname = f"hermes_plugins.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, PLUGIN / "__init__.py",
                                                  submodule_search_locations=[str(PLUGIN)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


class Ctx:
    """Records register_platform calls, as the gateway's plugin context would pass them on."""

    def __init__(self):
        self.platforms = {}

    def register_platform(self, name, label, adapter_factory, check_fn, **kw):
        self.platforms[name] = dict(label=label, adapter_factory=adapter_factory, check_fn=check_fn, **kw)
