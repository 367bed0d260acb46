"""The WhatsApp platform, with the bridge left to wa-sidecar.

Everything about messages (polling, sending, media, typing, gating) is the bundled adapter's: this
class subclasses it and replaces only what it does with the bridge process. It never spawns,
signals or replaces a bridge, never reads or writes ``bridge.pid``, and never looks at who owns the
port. It learns whether the bridge can be used from the sidecar's status feed instead of asking
``/health``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from typing import Any, Optional

from . import sidecar

logger = logging.getLogger(__name__)

# What this plugin uses of the gateway. Checked when the plugin registers, so a gateway whose
# adapter no longer has them is reported and keeps its bundled adapter, instead of failing later.
REQUIRED_METHODS = (
    "connect",
    "disconnect",
    "send",
    "_poll_messages",
    "_mark_connected",
    "_mark_disconnected",
    "_set_fatal_error",
    "_write_runtime_status_safe",
    "_acquire_platform_lock",
    "_release_platform_lock",
)
# Set by the bundled adapter's __init__; checked on each new adapter.
REQUIRED_ATTRIBUTES = ("_bridge_port", "_session_path", "_http_session", "_poll_task", "_running", "config")


class IncompatibleGateway(RuntimeError):
    """The gateway's WhatsApp adapter lacks something this plugin relies on."""


def check_interface(base: type) -> list[str]:
    """Return what ``base`` (the bundled adapter class) lacks of what this plugin uses."""
    missing = [f"{base.__name__}.{m}()" for m in REQUIRED_METHODS if not callable(getattr(base, m, None))]
    connect = getattr(base, "connect", None)
    if callable(connect):
        try:
            params = inspect.signature(connect).parameters
        except (TypeError, ValueError):
            params = {}
        if "is_reconnect" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            missing.append(f"{base.__name__}.connect(is_reconnect=...)")
    for m in ("_poll_messages", "connect", "disconnect"):
        if callable(getattr(base, m, None)) and not inspect.iscoroutinefunction(getattr(base, m)):
            missing.append(f"{base.__name__}.{m}() as a coroutine")
    return missing


def _connect_budget(extra: dict) -> float:
    """How long connect() waits for the bridge: the platform's sidecar_wait, else a little less
    than the gateway's own connect timeout, so the gateway hears why rather than a bare timeout."""
    raw = os.getenv("HERMES_GATEWAY_PLATFORM_CONNECT_TIMEOUT", "").strip()
    try:
        gateway_timeout = float(raw) if raw else 30.0
    except ValueError:
        gateway_timeout = 30.0
    cap = max(gateway_timeout - 3.0, 1.0) if gateway_timeout > 0 else None
    want = extra.get("sidecar_wait")
    try:
        budget = float(want) if want is not None else (cap if cap is not None else 25.0)
    except (TypeError, ValueError):
        budget = cap if cap is not None else 25.0
    if cap is not None:
        budget = min(budget, cap)
    return max(budget, 0.0)


async def _cancel(task: Optional[asyncio.Task]) -> None:
    """Cancel a task of ours and wait until it has ended, whatever it raised."""
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def make_adapter_class(base: type) -> type:
    """Build the adapter on top of the bundled ``WhatsAppAdapter`` class ``base``."""

    class SidecarWhatsAppAdapter(base):  # type: ignore[misc, valid-type]
        """The bundled WhatsApp adapter, attached to the bridge that wa-sidecar runs."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            lacking = [a for a in REQUIRED_ATTRIBUTES if not hasattr(self, a)]
            if lacking:
                raise IncompatibleGateway(
                    "wa-sidecar-whatsapp: this gateway's WhatsApp adapter has no "
                    + ", ".join(lacking)
                    + "; disable the plugin (`hermes plugins disable wa-sidecar-whatsapp`) and update wa-sidecar"
                )
            self._sidecar_extra = dict(getattr(config, "extra", None) or {})
            self._configured_port = self._bridge_port
            self._follower_task: Optional[asyncio.Task] = None
            self._follower: Optional[sidecar.Follower] = None
            self._sidecar_status: Optional[dict] = None
            self._verdict = (sidecar.WAIT, "whatsapp_sidecar_unreachable", "no word from wa-sidecar yet")
            self._verdict_changed: Optional[asyncio.Event] = None
            self._connecting = False  # connect() is waiting: it, not the follower, attaches
            self._attached = False
            self._reported: Optional[tuple] = None

        # -- what the sidecar says ---------------------------------------------------------------

        def _where(self) -> sidecar.Location:
            return sidecar.locate(self._sidecar_extra)

        async def _on_sidecar(self, status: Optional[dict], kind: str, info: Any) -> None:
            loc = self._follower.location if self._follower else None
            where = loc.describe() if loc else "wa-sidecar"
            if status is None:
                self._verdict = (
                    sidecar.WAIT,
                    "whatsapp_sidecar_unreachable",
                    f"wa-sidecar is not reachable at {where}: {info}. Start it (`systemctl --user start wa-sidecar`, "
                    "or its container)",
                )
            else:
                self._sidecar_status = status
                self._verdict = sidecar.judge(status, session=self._session_path, where=where)
                port = sidecar.bridge_port(status)
                ours = sidecar.same_path(sidecar.session_dir(status) or "/nonexistent", self._session_path)
                if ours and port and port != self._bridge_port and not self._attached:
                    logger.info("[%s] wa-sidecar runs the bridge on port %d (configured: %s)", self.name, port, self._configured_port)
                    self._bridge_port = port
            if self._verdict_changed is not None:
                self._verdict_changed.set()
            if self._connecting:
                return
            await self._follow_verdict()

        async def _follow_verdict(self) -> None:
            verdict, code, message = self._verdict
            if verdict == sidecar.ATTACH:
                if not self._attached:
                    self._attach()
                    logger.info("[%s] WhatsApp bridge is back (wa-sidecar: connected); attached", self.name)
                return
            if self._attached:
                await self._detach()
            key = (code, message)
            if key == self._reported:
                return
            self._reported = key
            # Retrying even when logged out: the sidecar resumes by itself once paired again, and
            # the gateway only comes back to a platform whose error is retryable.
            state = "retrying"
            log = logger.error if verdict == sidecar.NEEDS_PAIRING else logger.warning
            log("[%s] WhatsApp unavailable (%s): %s", self.name, code, message)
            self._write_runtime_status_safe("sidecar", platform_state=state, error_code=code, error_message=message)

        def _attach(self) -> None:
            import aiohttp

            port = sidecar.bridge_port(self._sidecar_status)
            if port:
                self._bridge_port = port
            self._attached = True
            self._reported = None
            self._mark_connected()
            if self._http_session is None or self._http_session.closed:
                self._http_session = aiohttp.ClientSession()
            if self._poll_task is None or self._poll_task.done():
                self._poll_task = asyncio.create_task(self._poll_messages())

        async def _detach(self) -> None:
            # Not the gateway's fatal-error path: that would disconnect this adapter and retry it
            # 30 s or more later, while the sidecar's bridge is usually back within seconds.
            self._attached = False
            self._running = False
            await self._cancel_poll()

        async def _cancel_poll(self) -> None:
            task, self._poll_task = self._poll_task, None
            await _cancel(task)

        async def _stop_follower(self) -> None:
            task, self._follower_task = self._follower_task, None
            await _cancel(task)

        # -- the gateway's calls -----------------------------------------------------------------

        async def connect(self, *, is_reconnect: bool = False) -> bool:
            """Attach to the sidecar's bridge once it is connected to WhatsApp.

            Waits for it up to the connect budget, following the feed. A bridge that is pairing,
            restarting, yielded or whose sidecar is away is a retryable error that says so; one
            that WhatsApp logged out is a retryable error that says how to pair.
            """
            if not self._acquire_platform_lock("whatsapp-session", str(self._session_path), "WhatsApp session"):
                return False
            self._verdict_changed = asyncio.Event()
            self._connecting = True
            self._follower = sidecar.Follower(self._where, self._on_sidecar, log=logger)
            self._follower_task = asyncio.create_task(self._follower.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _connect_budget(self._sidecar_extra)
            try:
                while True:
                    verdict, code, message = self._verdict
                    if verdict == sidecar.ATTACH:
                        self._attach()
                        loc = self._follower.location
                        print(f"[{self.name}] Using the bridge wa-sidecar runs (port {self._bridge_port}, sidecar {loc.describe() if loc else '?'})")
                        return True
                    if verdict == sidecar.NEEDS_PAIRING:
                        break
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._verdict_changed.clear()
                    try:
                        await asyncio.wait_for(self._verdict_changed.wait(), timeout=left)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self._connecting = False
            verdict, code, message = self._verdict
            await self._stop_follower()
            self._release_platform_lock()
            # Always retryable, needs_pairing included: a non-retryable error drops the platform
            # from the gateway's retry queue (and, as its only platform, makes the gateway exit),
            # while the sidecar resumes the bridge by itself once the device is paired again.
            message += " (the gateway retries with its own backoff)"
            logger.warning("[%s] %s", self.name, message)
            self._set_fatal_error(code, message, retryable=True)
            return False

        async def disconnect(self) -> None:
            """Stop following the sidecar and stop polling; the bridge keeps running."""
            self._shutting_down = True
            await self._stop_follower()
            await self._cancel_poll()
            if self._http_session is not None and not self._http_session.closed:
                await self._http_session.close()
            self._http_session = None
            self._attached = False
            self._release_platform_lock()
            self._mark_disconnected()
            print(f"[{self.name}] Disconnected (the bridge stays with wa-sidecar)")

    return SidecarWhatsAppAdapter
