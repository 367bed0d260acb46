"""Stand-in for gateway.platforms.base.BasePlatformAdapter: the state and reporting calls a
platform adapter makes, recorded in ``statuses`` (what the gateway would show) for the tests."""
import asyncio


class BasePlatformAdapter:
    def __init__(self, config, platform):
        self.config = config
        self.platform = platform
        self._running = False
        self._fatal_error_code = None
        self._fatal_error_message = None
        self._fatal_error_retryable = True
        self._fatal_error_handler = None
        self.statuses = []  # (platform_state, error_code, error_message)
        self.locks = []

    @property
    def name(self):
        return self.platform.value.title()

    @property
    def is_connected(self):
        return self._running

    @property
    def has_fatal_error(self):
        return self._fatal_error_message is not None

    @property
    def fatal_error_code(self):
        return self._fatal_error_code

    @property
    def fatal_error_message(self):
        return self._fatal_error_message

    @property
    def fatal_error_retryable(self):
        return self._fatal_error_retryable

    def set_fatal_error_handler(self, handler):
        self._fatal_error_handler = handler

    def _write_runtime_status_safe(self, context, **kw):
        self.statuses.append((kw.get("platform_state"), kw.get("error_code"), kw.get("error_message")))

    def _mark_connected(self):
        self._running = True
        self._fatal_error_code = self._fatal_error_message = None
        self._fatal_error_retryable = True
        self._write_runtime_status_safe("connected", platform_state="connected", error_code=None, error_message=None)

    def _mark_disconnected(self):
        self._running = False
        if not self.has_fatal_error:
            self._write_runtime_status_safe("disconnected", platform_state="disconnected", error_code=None, error_message=None)

    def _set_fatal_error(self, code, message, *, retryable):
        self._running = False
        self._fatal_error_code, self._fatal_error_message, self._fatal_error_retryable = code, message, retryable
        self._write_runtime_status_safe("fatal", platform_state="fatal", error_code=code, error_message=message)

    async def _notify_fatal_error(self):
        if self._fatal_error_handler:
            r = self._fatal_error_handler(self)
            if asyncio.iscoroutine(r):
                await r

    def _acquire_platform_lock(self, scope, identity, desc):
        self.locks.append(("acquire", scope, identity))
        self._lock = identity
        return True

    def _release_platform_lock(self):
        if getattr(self, "_lock", None):
            self.locks.append(("release", self._lock))
            self._lock = None
