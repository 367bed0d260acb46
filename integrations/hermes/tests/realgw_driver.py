"""Run by test_real_hermes.py in a fresh interpreter with the real Hermes on sys.path: loads the
plugin through the gateway's own plugin manager, builds the WhatsApp adapter from the registry,
connects it to the sidecar and follows a bridge kill. Prints one JSON line of results."""
import asyncio
import json
import os
import signal
import sys
import time
import urllib.request


async def main(listen_port, bridge_port, session, state):
    from hermes_cli.plugins import PluginManager
    from gateway.platform_registry import platform_registry
    from gateway.config import PlatformConfig

    mgr = PluginManager()
    mgr.discover_and_load()
    entry = platform_registry.get("whatsapp") if hasattr(platform_registry, "get") else platform_registry._entries.get("whatsapp")
    out = {"source": getattr(entry, "source", None), "plugin_name": getattr(entry, "plugin_name", None)}
    cfg = PlatformConfig(enabled=True, extra={"bridge_port": bridge_port, "session_path": session, "sidecar_state_dir": state})
    adapter = platform_registry.create_adapter("whatsapp", cfg)
    out["class"] = type(adapter).__name__
    out["connected"] = await adapter.connect()
    with urllib.request.urlopen(f"http://127.0.0.1:{listen_port}/v1/status") as r:
        pid = json.load(r)["pid"]
    os.kill(pid, signal.SIGKILL)
    t = time.monotonic()
    while adapter.is_connected and time.monotonic() - t < 5:
        await asyncio.sleep(0.05)
    out["saw_kill"] = not adapter.is_connected
    t = time.monotonic()
    while not adapter.is_connected and time.monotonic() - t < 10:
        await asyncio.sleep(0.05)
    out["reattached"] = adapter.is_connected
    out["own_bridge"] = adapter._bridge_process is not None
    await adapter.disconnect()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
