"""Stand-in for the bundled WhatsApp adapter: its messaging over the bridge's HTTP API (a poll
loop on /messages, /send) as the real one does it, and bridge management that must never run."""
import asyncio
from pathlib import Path

import aiohttp

from gateway.config import Platform
from gateway.platforms.base import BasePlatformAdapter


class WhatsAppAdapter(BasePlatformAdapter):
    def __init__(self, config):
        super().__init__(config, Platform.WHATSAPP)
        self._bridge_process = None
        self._bridge_port = config.extra.get("bridge_port", 3000)
        self._session_path = Path(config.extra.get("session_path", "/nonexistent/session"))
        self._http_session = None
        self._poll_task = None
        self.polls = 0
        self.poll_errors = 0

    async def connect(self, *, is_reconnect=False):
        raise AssertionError("the bundled connect() manages the bridge: the plugin must not call it")

    async def disconnect(self):
        raise AssertionError("the bundled disconnect() removes bridge.pid: the plugin must not call it")

    async def _poll_messages(self):
        while self._running:
            try:
                async with self._http_session.get(f"http://127.0.0.1:{self._bridge_port}/messages",
                                                  timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        await r.json()
                        self.polls += 1
            except asyncio.CancelledError:
                break
            except Exception:
                self.poll_errors += 1
                await asyncio.sleep(5)
            await asyncio.sleep(0.05)

    async def send(self, chat_id, content, reply_to=None, metadata=None):
        if not self._running or not self._http_session:
            return {"success": False, "error": "Not connected"}
        async with self._http_session.post(f"http://127.0.0.1:{self._bridge_port}/send",
                                           json={"chatId": chat_id, "message": content}) as r:
            return {"success": r.status == 200, "status": r.status}


def register(ctx):
    ctx.register_platform(
        name="whatsapp",
        label="WhatsApp",
        adapter_factory=WhatsAppAdapter,
        check_fn=lambda: False,  # the real one needs node; the plugin must replace this check
        required_env=["WHATSAPP_ENABLED"],
        install_hint="needs node",
        allowed_users_env="WHATSAPP_ALLOWED_USERS",
        emoji="💬",
    )
