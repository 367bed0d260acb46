"""Following wa-sidecar's status feed, with nothing but aiohttp and the standard library.

This module knows the sidecar's protocol (docs/protocol.md in the wa-sidecar repository) and nothing
of the Hermes gateway, so it can be tested on its own. The adapter in ``adapter.py`` turns what it
reports into the gateway's platform states.
"""

from __future__ import annotations

import asyncio
import grp
import ipaddress
import json
import logging
import os
import pwd
import random
import socket
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Optional

import aiohttp

logger = logging.getLogger(__name__)

# The sidecar's default --listen. Used only when nothing says where the sidecar is (no address and
# no state directory configured); a module variable so the tests can point it at a dead port.
DEFAULT_ADDR = "127.0.0.1:7390"
DISCOVERY_FILE = "sidecar.json"

# Verdicts: what the gateway should make of a sidecar snapshot.
ATTACH = "attach"  # the bridge is connected to WhatsApp: use it
WAIT = "wait"  # it is on its way (starting, reconnecting, pairing, backoff, yielded): retryable
NEEDS_PAIRING = "needs_pairing"  # WhatsApp logged the device out: a person must pair (still retryable)


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Return the state directory wa-sidecar uses when it is given none."""
    if os.geteuid() == 0:
        return Path("/var/lib/wa-sidecar")
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "wa-sidecar"
    return Path.home() / ".local" / "state" / "wa-sidecar"


@dataclass(frozen=True)
class Location:
    """Where a sidecar's status server is, and how it was found."""

    addr: str  # host:port, or unix:/path; empty when the configured place names no sidecar
    token: Optional[str] = field(repr=False)  # never in a log line or a traceback
    source: str  # for messages: "sidecar.json in DIR", "the platform's sidecar_addr", ...
    missing: str = ""  # why there is no address, when addr is empty
    pid: int = 0  # the sidecar sidecar.json names: the only process a Unix socket may be served by

    def describe(self) -> str:
        return f"{self.addr} ({self.source})" if self.addr else self.source

    def url(self, path: str) -> str:
        if self.addr.startswith("unix:"):
            return "http://localhost" + path
        host, _, port = self.addr.rpartition(":")
        # A sidecar listening on every address (sidecar.json then says [::] or 0.0.0.0) answers only
        # to loopback names as Host: reach it through loopback.
        try:
            every = host == "" or ipaddress.ip_address(host.strip("[]")).is_unspecified
        except ValueError:
            every = False
        if every:
            return f"http://127.0.0.1:{port}{path}"
        return f"http://{self.addr}{path}"

    def connector(self) -> Optional[aiohttp.BaseConnector]:
        if self.addr.startswith("unix:"):
            return _PeerConnector(self.addr[len("unix:"):], self.pid)
        return None


class _PeerConnector(aiohttp.UnixConnector):
    """A Unix socket is only a name in a directory: whoever can write the directory can move the
    sidecar's socket away and listen at its path. With a pid, nothing is sent unless the kernel says
    that process listens there (SO_PEERCRED), as the sidecar's own CLI checks."""

    def __init__(self, path: str, pid: int):
        super().__init__(path=path)
        self._pid = pid

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        proto = await super()._create_connection(*args, **kwargs)
        if self._pid:
            sock = proto.transport.get_extra_info("socket")
            pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if pid != self._pid:
                proto.transport.close()
                raise aiohttp.ClientConnectionError(
                    f"the socket {self.path} is served by pid {pid} (uid {uid}), not by the sidecar (pid {self._pid}) "
                    "that sidecar.json names: whoever can write its directory may have put it there; nothing was sent")
        return proto


def _read_token_file(path: str) -> Optional[str]:
    try:
        tok = Path(path).read_text().strip()
    except OSError as e:
        logger.debug("cannot read wa-sidecar token file %s: %s", path, e)
        return None
    return tok or None


class UntrustedFile(Exception):
    """A file that sidecar.json's rules say not to believe (see docs/security.md)."""


def _check_dir(path: Path) -> os.stat_result:
    """Return the state directory's stat, or raise UntrustedFile when others could change it."""
    st = os.stat(path)
    if st.st_mode & 0o022 and not (st.st_mode & 0o002 == 0 and _user_private_group(st)):
        raise UntrustedFile(f"{path} is writable by other users (mode {st.st_mode & 0o7777:04o}); chmod go-w {path}")
    return st


def _user_private_group(st: os.stat_result) -> bool:
    """Whether the file's group is its owner's own group (same name), as the sidecar also accepts."""
    try:
        return grp.getgrgid(st.st_gid).gr_name == pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return False


def _read_trusted(path: Path, owners: set, follow: bool = False, limit: int = 64 << 10) -> bytes:
    """Read a file that must be a regular file of one of owners, with one link, writable by its owner
    alone; unless follow is set (a token file outside the state directory, such as a mounted secret,
    which is a link), a link planted in its place is not followed."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFile(f"{path} is not a regular file")
        if st.st_uid not in owners:
            raise UntrustedFile(f"{path} belongs to uid {st.st_uid}, not to the sidecar's user or root")
        if st.st_nlink != 1:
            raise UntrustedFile(f"{path} has {st.st_nlink} links")
        if st.st_mode & 0o022:
            raise UntrustedFile(f"{path} is writable by other users (mode {st.st_mode & 0o7777:04o})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def _local_addr(addr: str) -> bool:
    """Whether addr is a Unix socket or an address of this machine: the only places a token goes."""
    if addr.startswith("unix:"):
        return os.path.isabs(addr[len("unix:"):])
    host = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr else ""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _writer_gone(data: Mapping[str, Any], owner: int) -> str:
    """Why the sidecar that wrote sidecar.json no longer runs, or "" while it does: its pid must be
    a process of the file's owner, with the start time the file records, as the CLI checks."""
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return "that is no process"
    try:
        if os.stat(f"/proc/{pid}").st_uid != owner:
            return "that is not a process of the file's owner here"
        start = data.get("start_time")
        if start:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # Field 22, counted after the command name, which may hold spaces and parentheses.
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[19]) != start:
                return "that is another process now"
    except (OSError, IndexError, ValueError):
        return "no such process runs here"
    return ""


def _explicit_token(extra: Mapping[str, Any], env: Mapping[str, str]) -> Optional[str]:
    path = extra.get("sidecar_token_file") or env.get("WA_SIDECAR_TOKEN_FILE")
    if path:
        return _read_token_file(str(path))
    return env.get("WA_SIDECAR_TOKEN") or None


def locate(extra: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Location:
    """Find the sidecar the way its own CLI does.

    An address in the platform's settings (``sidecar_addr``), ``$WA_SIDECAR_ADDR`` or ``$WA_SIDECAR_LISTEN`` wins; else
    ``sidecar.json`` in the state directory (``sidecar_state_dir``, ``$WA_SIDECAR_STATE_DIR``, or the
    sidecar's default); else the default address, to which no token is sent, since nothing says the
    token belongs to whatever answers there. The file is read again at each call, so a sidecar that
    restarts elsewhere is found.
    """
    # $WA_SIDECAR_LISTEN is the server's name for the same address, so a gateway given the sidecar's
    # environment finds it too; its "any free port" (:0) is for sidecar.json to tell.
    named = [(extra.get("sidecar_addr"), "the platform's sidecar_addr"), (env.get("WA_SIDECAR_ADDR"), "$WA_SIDECAR_ADDR"),
             (env.get("WA_SIDECAR_LISTEN"), "$WA_SIDECAR_LISTEN")]
    for addr, src in named:
        if addr and not str(addr).endswith(":0"):
            return Location(str(addr), _explicit_token(extra, env), src)
    state = extra.get("sidecar_state_dir") or env.get("WA_SIDECAR_STATE_DIR")
    state_dir = Path(str(state)).expanduser() if state else default_state_dir(env)
    disc = state_dir / DISCOVERY_FILE
    # A state directory given explicitly names one sidecar: when its sidecar.json is missing, that
    # sidecar is not running, and whatever answers at the default address is some other one (maybe
    # another account's). Only the sidecar's own default state directory falls back to it.
    src = ("the platform's sidecar_state_dir" if extra.get("sidecar_state_dir") else "$WA_SIDECAR_STATE_DIR") if state else ""
    try:
        owners = {0, os.geteuid(), _check_dir(state_dir).st_uid}
        data = json.loads(_read_trusted(disc, owners))
        writer = os.lstat(disc).st_uid
    except FileNotFoundError:
        if state:
            return Location("", None, f"{state_dir} ({src})", f"there is no {disc}: the sidecar with that state directory is not running")
        return Location(DEFAULT_ADDR, None, f"the default address (no {disc})")
    except (OSError, ValueError, UntrustedFile) as e:
        if state:
            return Location("", None, f"{state_dir} ({src})", f"cannot use {disc}: {e}")
        logger.warning("wa-sidecar: cannot use %s (%s); trying %s without the token", disc, e, DEFAULT_ADDR)
        return Location(DEFAULT_ADDR, None, f"the default address ({disc} not usable)")
    listen = data.get("listen") if isinstance(data, dict) else None
    if not isinstance(listen, str) or not listen:
        if state:
            return Location("", None, f"{state_dir} ({src})", f"{disc} names no address")
        return Location(DEFAULT_ADDR, None, f"the default address ({disc} names no address)")
    if not _local_addr(listen):
        # A token goes only to a sidecar on this machine: a file naming another host is not believed.
        msg = f"{disc} names {listen!r}, which is not an address of this machine"
        if state:
            return Location("", None, f"{state_dir} ({src})", msg)
        logger.warning("wa-sidecar: %s; trying %s without the token", msg, DEFAULT_ADDR)
        return Location(DEFAULT_ADDR, None, f"the default address ({msg})")
    gone = _writer_gone(data, writer)
    if gone:
        # A file that a killed sidecar left names whatever listens at its address now: no token
        # goes there. Reading is harmless, and it is all that works when the sidecar runs in
        # another pid namespace (another container sharing the state directory), whose pids this
        # one cannot check.
        logger.warning("wa-sidecar: %s names pid %r, but %s; reading %s without the token", disc, data.get("pid"), gone, listen)
        return Location(listen, None, f"{disc} (its pid cannot be checked, so no token)")
    token = _explicit_token(extra, env)
    tf = data.get("token_file")
    if token is None and isinstance(tf, str) and os.path.isabs(tf):
        inside = os.path.dirname(os.path.normpath(tf)) == os.path.normpath(state_dir)
        try:
            token = _read_trusted(Path(tf), owners, follow=not inside).decode().strip() or None
        except (OSError, UnicodeDecodeError, UntrustedFile) as e:
            logger.warning("wa-sidecar: not reading the token file %s: %s", tf, e)
    return Location(listen, token, f"{disc}", pid=data["pid"])


def _describe_exit(last: Any) -> str:
    if not isinstance(last, dict):
        return ""
    if last.get("signal"):
        what = f"{last['signal']}"
    elif last.get("code") is not None:
        what = f"exit {last['code']}"
    else:
        what = last.get("error") or "a failed start"
    cls = last.get("class")
    return f"{what} ({cls})" if cls else what


def session_dir(status: Optional[Mapping[str, Any]]) -> str:
    """Return the session directory whose bridge the sidecar runs, as it reports it ("" if not)."""
    sess = ((status or {}).get("details") or {}).get("session") or {}
    d = sess.get("dir") if isinstance(sess, dict) else None
    return d if isinstance(d, str) else ""


def same_path(a: Any, b: Any) -> bool:
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except (OSError, RuntimeError):
        return os.path.normpath(str(a)) == os.path.normpath(str(b))


def judge(
    status: Optional[Mapping[str, Any]], session: Any = None, where: str = "wa-sidecar"
) -> tuple[str, str, str]:
    """Turn a sidecar snapshot into (verdict, code, message) for the gateway.

    ``code`` is a machine-readable reason in the gateway's ``whatsapp_*`` style, ``message`` a
    sentence a person can act on, built from the state (the sidecar's own ``message`` only where it
    says what to do: yielded, given_up). With ``session`` (the gateway's session
    directory), a sidecar that runs the bridge of another session is never attached to: its bridge
    is another account's.
    """
    if not status:
        return WAIT, "whatsapp_sidecar_unreachable", "wa-sidecar is not reachable"
    if session is not None:
        theirs = session_dir(status)
        if not theirs:
            return WAIT, "whatsapp_sidecar_other_session", (
                f"the sidecar at {where} does not say which session its bridge uses, so it is not "
                f"known to be this gateway's {session}; not attaching"
            )
        if not same_path(theirs, session):
            return WAIT, "whatsapp_sidecar_other_session", (
                f"the sidecar at {where} runs the bridge of session {theirs}, not this gateway's "
                f"{session}: point sidecar_state_dir (or sidecar_addr) at this gateway's sidecar"
            )
    state = status.get("state", "unknown")
    said = status.get("message") or ""
    wa = (status.get("details") or {}).get("whatsapp") or {}
    conn = wa.get("connection") or "unknown"
    # The details describe the bridge named by bridge_pid, which can lag the snapshot's pid by one
    # event after a restart: until they agree, the connection and health are the old bridge's.
    pid, about = status.get("pid"), wa.get("bridge_pid")
    fresh = isinstance(pid, int) and pid > 0 and about == pid
    health = wa.get("health") or "unknown"
    if state == "running" and fresh and conn == "connected" and health == "ok":
        return ATTACH, "", "the bridge is connected to WhatsApp"
    if state == "needs_pairing":
        msg = (
            "WhatsApp logged this device out. Delete the session directory or run `hermes whatsapp`, "
            "then scan the new QR code; the sidecar resumes by itself; the gateway attaches at its next retry"
        )
        return NEEDS_PAIRING, "whatsapp_not_paired", msg
    if state == "running":
        if not fresh:
            return WAIT, "whatsapp_sidecar_starting", (
                f"the sidecar started a new bridge (pid {pid}) and has no word from it yet"
            )
        if conn == "connected":
            return WAIT, "whatsapp_sidecar_connecting", (
                f"the bridge says it is connected, but its health check is {health}"
            )
        if conn == "pairing":
            return WAIT, "whatsapp_sidecar_pairing", (
                "the bridge is showing a QR code: scan it with WhatsApp (Settings > Linked devices); "
                "`wa-sidecar watch` or bridge.log show it"
            )
        return WAIT, "whatsapp_sidecar_connecting", f"the bridge is connecting to WhatsApp (connection: {conn})"
    if state == "backoff":
        ex = _describe_exit(status.get("last_exit"))
        nxt = status.get("next_start_at")
        msg = "the bridge is waiting to restart" + (f" after {ex}" if ex else "")
        if nxt:
            msg += f"; next start at {nxt}"
        if status.get("crashloop"):
            msg += f"; it is crash-looping ({status.get('consecutive_failures')} failures in a row): see `wa-sidecar status`"
        return WAIT, "whatsapp_sidecar_backoff", msg
    if state == "yielded":
        return WAIT, "whatsapp_sidecar_yielded", said or (
            "another bridge on this session holds the bridge's port; the sidecar waits for it to go"
        )
    if state == "given_up":
        return WAIT, "whatsapp_sidecar_given_up", said or "the sidecar gave up restarting the bridge: run `wa-sidecar start`"
    # The sidecar's message is what it says about the bridge in general (often whether the bundled
    # adapter would adopt it), so the other states are explained from the state itself.
    if state == "stopping":
        return WAIT, "whatsapp_sidecar_stopped", "the sidecar is stopping the bridge"
    if state == "stopped":
        return WAIT, "whatsapp_sidecar_stopped", "the sidecar's bridge is stopped: run `wa-sidecar start`"
    if state == "starting":
        return WAIT, "whatsapp_sidecar_starting", "the sidecar is starting the bridge"
    return WAIT, f"whatsapp_sidecar_{state}", f"the sidecar's bridge is {state}"


def bridge_port(status: Optional[Mapping[str, Any]]) -> Optional[int]:
    """Return the bridge's port as the sidecar reports it, if it does."""
    wa = ((status or {}).get("details") or {}).get("whatsapp") or {}
    port = wa.get("port")
    return port if isinstance(port, int) and port > 0 else None


# on_status(snapshot or None, event kind, the whole message or an error text)
StatusCallback = Callable[[Optional[dict], str, Any], Optional[Awaitable[None]]]


class Follower:
    """Follows the feed forever: hello, then every event; reconnects with backoff when it is lost.

    ``on_status`` gets the snapshot after every hello and event, and ``None`` when the sidecar
    cannot be reached (its third argument then says why). A sequence gap reconnects at once, since
    the new hello resyncs. ``run`` returns only when cancelled.
    """

    def __init__(
        self,
        where: Callable[[], Location],
        on_status: StatusCallback,
        *,
        backoff_initial: float = 0.25,
        backoff_max: float = 5.0,
        stable_after: float = 10.0,
        log: logging.Logger = logger,
    ) -> None:
        self._where = where
        self._on_status = on_status
        self._initial = backoff_initial
        self._max = backoff_max
        self._stable_after = stable_after
        self._log = log
        self.location: Optional[Location] = None
        self.connected = False

    async def _emit(self, status: Optional[dict], kind: str, info: Any) -> None:
        res = self._on_status(status, kind, info)
        if asyncio.iscoroutine(res):
            await res

    async def run(self) -> None:
        delay = self._initial
        lost_logged = False
        while True:
            loop = asyncio.get_running_loop()
            began = loop.time()
            loc = self._where()
            self.location = loc
            why = await self._follow_once(loc)
            if self.connected:
                lost_logged = False
            self.connected = False
            if loop.time() - began >= self._stable_after:
                delay = self._initial
            await self._emit(None, "unreachable", why)
            if not lost_logged:
                self._log.warning("wa-sidecar feed at %s: %s; retrying with backoff", loc.describe(), why)
                lost_logged = True
            else:
                self._log.debug("wa-sidecar feed at %s: %s", loc.describe(), why)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._max)

    async def _follow_once(self, loc: Location) -> str:
        if not loc.addr:
            return loc.missing or "no address for the sidecar"
        headers = {"Authorization": f"Bearer {loc.token}"} if loc.token else {}
        try:
            # No total timeout: the feed lives as long as the sidecar. A connect that hangs is cut.
            timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
            async with aiohttp.ClientSession(connector=loc.connector(), timeout=timeout) as session:
                async with session.ws_connect(
                    loc.url("/v1/events"), headers=headers, heartbeat=20, max_msg_size=16 << 20
                ) as ws:
                    return await self._read(ws, loc)
        except asyncio.CancelledError:
            raise
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 401:
                return "the sidecar refused the token (401): check sidecar_token_file or $WA_SIDECAR_TOKEN_FILE"
            return f"websocket refused: HTTP {e.status}"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, loc: Location) -> str:
        seq: Optional[int] = None
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                m = json.loads(msg.data)
            except ValueError:
                continue
            kind = m.get("type")
            if kind == "hello":
                seq = m.get("seq")
                if not self.connected:
                    self._log.info("following wa-sidecar at %s", loc.describe())
                self.connected = True
                await self._emit(m.get("status"), "hello", m)
            elif kind == "event" and seq is not None:
                if m.get("seq") != seq + 1:
                    return f"missed events (seq {seq} then {m.get('seq')}); resyncing"
                seq = m["seq"]
                await self._emit(m.get("status"), str(m.get("event")), m)
        if ws.close_code == 1001:
            return "the sidecar is exiting"
        return f"the feed closed (code {ws.close_code})"
