"""wa-sidecar-whatsapp: the gateway's WhatsApp platform, with the bridge left to wa-sidecar.

Registers a platform named ``whatsapp``, which replaces the bundled one while this plugin is
enabled; disabling or removing the plugin brings the bundled adapter back. It registers with the
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


def register(ctx) -> None:
    """Replace the bundled WhatsApp platform, or leave it in place and say why."""
    try:
        from plugins.platforms.whatsapp import adapter as bundled
        from .adapter import check_interface, make_adapter_class
    except Exception as e:  # an import error of the gateway's own module is the gateway's version
        logger.error(
            "wa-sidecar-whatsapp: cannot load the gateway's WhatsApp adapter (%s); "
            "the bundled WhatsApp platform stays in charge of the bridge", e,
        )
        return
    base = getattr(bundled, "WhatsAppAdapter", None)
    missing = ["WhatsAppAdapter"] if base is None else check_interface(base)
    if not callable(getattr(bundled, "register", None)):
        missing.append("register(ctx)")
    if missing:
        logger.error(
            "wa-sidecar-whatsapp: this Hermes version's WhatsApp adapter lacks %s, which the plugin "
            "relies on; not replacing it, so the bundled adapter manages the bridge (and may restart "
            "the sidecar's). Update wa-sidecar (`wa-sidecar install-hermes-plugin --force`) or "
            "disable the plugin (`hermes plugins disable wa-sidecar-whatsapp`)", ", ".join(missing),
        )
        return
    rec = _Recorder()
    bundled.register(rec)
    entry = dict(rec.kwargs)
    if entry.get("name", PLATFORM) != PLATFORM:
        logger.error("wa-sidecar-whatsapp: the bundled adapter registers %r, not %r; not replacing it", entry.get("name"), PLATFORM)
        return
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
