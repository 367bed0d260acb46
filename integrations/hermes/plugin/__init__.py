"""wa-sidecar-whatsapp: the gateway's WhatsApp platform, with the bridge left to wa-sidecar.

Registers a platform named ``whatsapp``, which replaces the bundled one while this plugin is
enabled; disabling or removing the plugin brings the bundled adapter back. On a gateway whose
adapter lacks what the plugin relies on, it registers one whose connect() fails (retryably) saying
so, rather than leave the bundled adapter to kill the sidecar's bridge. It registers with the
bundled platform's own settings (setup, allowlists, cron delivery, out-of-process sending) and
changes only the adapter and its requirement check.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

PLATFORM = "whatsapp"


class _Recorder:
    """Stands in for the plugin context to learn how the bundled platform registers itself."""

    def __init__(self) -> None:
        self.kwargs: dict = {}

    def register_platform(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __getattr__(self, name):
        # The bundled register() may grow other calls (hooks, commands); they are not ours to make.
        return lambda *a, **k: None


def _requirements_met() -> bool:
    # The bridge runs under the sidecar, perhaps in another container: Node.js need not be here.
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _incompatible(ctx, bundled, why: str) -> None:
    """Register a WhatsApp platform whose connect() fails, retryably, saying why.

    Not the bundled adapter: it kills and replaces the sidecar's bridge, which is what the plugin was
    installed to stop. Disabling the plugin brings it back for whoever wants it.
    """
    message = (
        f"the wa-sidecar-whatsapp plugin does not know this gateway: its WhatsApp adapter lacks {why}. "
        "Update wa-sidecar and run `wa-sidecar install-hermes-plugin --force`, or disable the plugin "
        "(`hermes plugins disable wa-sidecar-whatsapp`, then restart the gateway) to get the bundled "
        "WhatsApp adapter back, which manages the bridge itself and restarts the sidecar's"
    )
    logger.error("wa-sidecar-whatsapp: %s", message)
    try:
        from gateway.config import Platform
        from gateway.platforms.base import BasePlatformAdapter
    except Exception as e:
        logger.error("wa-sidecar-whatsapp: cannot load the gateway's platform base either (%s); registering nothing", e)
        return

    class IncompatibleGatewayAdapter(BasePlatformAdapter):  # type: ignore[misc, valid-type]
        """Stands where the WhatsApp adapter would, to say why there is none."""

        def __init__(self, config) -> None:
            super().__init__(config, Platform.WHATSAPP)

        async def connect(self, *, is_reconnect: bool = False) -> bool:
            logger.error("[%s] %s", getattr(self, "name", "Whatsapp"), message)
            setter = getattr(self, "_set_fatal_error", None)
            if callable(setter):
                setter("whatsapp_plugin_incompatible", message, retryable=True)
            return False

        async def disconnect(self) -> None:
            return None

        async def send(self, chat_id, content, reply_to=None, metadata=None):
            try:
                from gateway.platforms.base import SendResult
                return SendResult(success=False, error=message)
            except Exception:
                return {"success": False, "error": message}

        async def get_chat_info(self, chat_id):
            return {"name": str(chat_id), "type": "dm"}

    entry: dict = {}
    if bundled is not None and callable(getattr(bundled, "register", None)):
        rec = _Recorder()
        try:
            bundled.register(rec)
            entry = dict(rec.kwargs)
        except Exception as e:
            logger.debug("wa-sidecar-whatsapp: the bundled register() failed: %s", e)
    entry.pop("plugin_name", None)
    entry.update(
        name=PLATFORM,
        label=entry.get("label") or "WhatsApp",
        adapter_factory=IncompatibleGatewayAdapter,
        check_fn=lambda: True,  # so the gateway builds it, and shows the error at connect
        install_hint="Update wa-sidecar (`wa-sidecar install-hermes-plugin --force`) or disable the wa-sidecar-whatsapp plugin",
    )
    ctx.register_platform(**entry)


def register(ctx) -> None:
    """Replace the bundled WhatsApp platform; on a gateway it does not know, register one that says so."""
    try:
        from .adapter import check_interface, make_adapter_class
    except Exception as e:  # aiohttp, mostly: the gateway's own WhatsApp platform needs it too
        return _incompatible(ctx, None, f"what the plugin's own code needs ({e})")
    try:
        from plugins.platforms.whatsapp import adapter as bundled
    except Exception as e:  # an import error of the gateway's own module is the gateway's version
        return _incompatible(ctx, None, f"an importable plugins.platforms.whatsapp.adapter ({e})")
    base = getattr(bundled, "WhatsAppAdapter", None)
    missing = ["WhatsAppAdapter"] if base is None else check_interface(base)
    if not callable(getattr(bundled, "register", None)):
        missing.append("register(ctx)")
    if missing:
        return _incompatible(ctx, bundled, ", ".join(missing))
    rec = _Recorder()
    bundled.register(rec)
    entry = dict(rec.kwargs)
    if entry.get("name", PLATFORM) != PLATFORM:
        return _incompatible(ctx, None, f"a platform named {PLATFORM!r} (its register() names {entry.get('name')!r})")
    cls = make_adapter_class(base)
    entry.update(
        name=PLATFORM,
        label=entry.get("label") or "WhatsApp",
        adapter_factory=cls,
        check_fn=_requirements_met,
        install_hint="The bridge runs under wa-sidecar: see `wa-sidecar status`; the plugin needs aiohttp",
    )
    entry.pop("plugin_name", None)
    ctx.register_platform(**entry)
    logger.info("wa-sidecar-whatsapp: WhatsApp bridge left to wa-sidecar (bundled adapter's messaging, sidecar's status feed)")
