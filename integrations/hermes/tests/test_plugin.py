"""The plugin inside a stand-in gateway, against the real sidecar and its simulated bridge."""
import asyncio
import os
import signal
import sys
import time
import unittest
from pathlib import Path

import harness

sys.path.insert(0, str(Path(__file__).resolve().parent / "standin"))
from gateway.config import PlatformConfig  # noqa: E402

plugin = harness.load_plugin()
from hermes_plugins.wa_sidecar_whatsapp import sidecar  # noqa: E402

# Never the real default address: a sidecar running on this machine must not answer the tests.
sidecar.DEFAULT_ADDR = f"127.0.0.1:{harness.free_port()}"


def tearDownModule():
    harness.cleanup_binary()


class Base(unittest.IsolatedAsyncioTestCase):
    paired = True

    def setUp(self):
        self.world = harness.World(paired=self.paired)
        self.addCleanup(self.world.close)
        ctx = harness.Ctx()
        plugin.register(ctx)
        self.entry = ctx.platforms["whatsapp"]
        self.adapters = []

    async def asyncTearDown(self):
        for a in self.adapters:
            await a.disconnect()

    def adapter(self, **extra):
        a = self.entry["adapter_factory"](PlatformConfig(enabled=True, extra=self.world.extra(**extra)))
        self.adapters.append(a)
        return a

    async def until(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            await asyncio.sleep(0.05)
        self.fail(f"timed out waiting for {what}; sidecar log:\n{self.world.tail()}")

    def states(self, a):
        return [s[0] for s in a.statuses]


class Registration(unittest.TestCase):
    def test_replaces_whatsapp_with_the_bundled_settings(self):
        ctx = harness.Ctx()
        plugin.register(ctx)
        e = ctx.platforms["whatsapp"]
        self.assertEqual(e["allowed_users_env"], "WHATSAPP_ALLOWED_USERS")
        self.assertEqual(e["required_env"], ["WHATSAPP_ENABLED"])
        self.assertTrue(e["check_fn"](), "needs only aiohttp, not node")

    def test_incompatible_adapter_says_so_at_connect(self):
        # Not the bundled adapter, which would kill the sidecar's bridge.
        from plugins.platforms.whatsapp import adapter as bundled
        saved = bundled.WhatsAppAdapter._poll_messages
        del bundled.WhatsAppAdapter._poll_messages
        try:
            ctx = harness.Ctx()
            with self.assertLogs("hermes_plugins.wa_sidecar_whatsapp", "ERROR") as logs:
                plugin.register(ctx)
            self.assertIn("_poll_messages", logs.output[0])
        finally:
            bundled.WhatsAppAdapter._poll_messages = saved
        e = ctx.platforms["whatsapp"]
        self.assertEqual(e["allowed_users_env"], "WHATSAPP_ALLOWED_USERS")
        self.assertTrue(e["check_fn"]())
        a = e["adapter_factory"](PlatformConfig(enabled=True, extra={}))
        self.assertNotIsInstance(a, bundled.WhatsAppAdapter)
        with self.assertLogs("hermes_plugins.wa_sidecar_whatsapp", "ERROR"):
            self.assertFalse(asyncio.run(a.connect()))
        self.assertEqual(a.fatal_error_code, "whatsapp_plugin_incompatible")
        self.assertTrue(a.fatal_error_retryable)
        self.assertIn("_poll_messages", a.fatal_error_message)
        self.assertIn("hermes plugins disable wa-sidecar-whatsapp", a.fatal_error_message)
        self.assertIn("install-hermes-plugin", a.fatal_error_message)


class Judge(unittest.TestCase):
    def test_verdicts(self):
        def st(state, conn=None, pid=7, bridge_pid=7, health="ok", **kw):
            d = {"state": state, "pid": pid, **kw}
            if conn:
                d["details"] = {"whatsapp": {"connection": conn, "bridge_pid": bridge_pid, "health": health}}
            return d
        cases = [
            (None, sidecar.WAIT, "whatsapp_sidecar_unreachable"),
            (st("running", "connected"), sidecar.ATTACH, ""),
            # just after a restart the details are still the old bridge's
            (st("running", "connected", pid=8, bridge_pid=7), sidecar.WAIT, "whatsapp_sidecar_starting"),
            (st("running", "connected", pid=0, bridge_pid=0), sidecar.WAIT, "whatsapp_sidecar_starting"),
            (st("running", "connected", health="failing"), sidecar.WAIT, "whatsapp_sidecar_connecting"),
            (st("started", "connected", pid=8), sidecar.WAIT, "whatsapp_sidecar_started"),
            (st("exited", "connected", pid=0), sidecar.WAIT, "whatsapp_sidecar_exited"),
            (st("running", "pairing"), sidecar.WAIT, "whatsapp_sidecar_pairing"),
            (st("running", "disconnected"), sidecar.WAIT, "whatsapp_sidecar_connecting"),
            (st("backoff", last_exit={"code": 1, "class": "failure"}), sidecar.WAIT, "whatsapp_sidecar_backoff"),
            (st("yielded", message="port held by pid 9 (node)"), sidecar.WAIT, "whatsapp_sidecar_yielded"),
            (st("needs_pairing", message="logged out."), sidecar.NEEDS_PAIRING, "whatsapp_not_paired"),
            (st("given_up"), sidecar.WAIT, "whatsapp_sidecar_given_up"),
            (st("stopped"), sidecar.WAIT, "whatsapp_sidecar_stopped"),
            (st("starting"), sidecar.WAIT, "whatsapp_sidecar_starting"),
        ]
        # the sidecar's message is about adoption, not about why the bridge is unavailable
        adopt = "the gateway would use this bridge as it is"
        for state in ("stopped", "stopping", "starting", "backoff", "running", "exited"):
            with self.subTest(state=state):
                self.assertNotIn(adopt, sidecar.judge(st(state, "disconnected", message=adopt))[2])
        v, c, m = sidecar.judge(st("needs_pairing", message=adopt))
        self.assertNotIn(adopt, m)
        # as operations.md says it
        for want in ("delete the session directory or run `hermes whatsapp`", "then scan the new qr code",
                     "the sidecar resumes by itself", "the gateway attaches at its next retry"):
            self.assertIn(want, m.lower())
        for status, verdict, code in cases:
            with self.subTest(status=status):
                v, c, m = sidecar.judge(status)
                self.assertEqual((v, c), (verdict, code))
                self.assertTrue(m)

    def test_locate(self):
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            env = {"WA_SIDECAR_STATE_DIR": d}
            # A state directory given explicitly without sidecar.json: that sidecar is not running,
            # and the default address would be some other sidecar's.
            loc = sidecar.locate({}, env)
            self.assertEqual((loc.addr, loc.token), ("", None))
            self.assertIn("sidecar.json", loc.missing)
            loc = sidecar.locate({"sidecar_state_dir": d}, {})
            self.assertEqual(loc.addr, "")
            if os.geteuid() != 0:  # the sidecar's own default state dir falls back to the default address
                loc = sidecar.locate({}, {"XDG_STATE_HOME": d})
                self.assertEqual((loc.addr, loc.token), (sidecar.DEFAULT_ADDR, None))
            Path(d, "token").write_text("abc\n")
            Path(d, "sidecar.json").write_text(json.dumps({"listen": "127.0.0.1:7999", "token_file": f"{d}/token", "pid": os.getpid()}))
            loc = sidecar.locate({}, env)
            self.assertEqual((loc.addr, loc.token), ("127.0.0.1:7999", "abc"))
            self.assertNotIn("abc", repr(loc))
            loc = sidecar.locate({"sidecar_addr": "unix:/run/x.sock"}, env)
            self.assertEqual((loc.addr, loc.token, loc.url("/v1/events")), ("unix:/run/x.sock", None, "http://localhost/v1/events"))
            # the server's name for the address works too; its "any free port" leaves it to sidecar.json
            loc = sidecar.locate({}, {**env, "WA_SIDECAR_LISTEN": "127.0.0.1:7391"})
            self.assertEqual((loc.addr, loc.source), ("127.0.0.1:7391", "$WA_SIDECAR_LISTEN"))
            loc = sidecar.locate({}, {**env, "WA_SIDECAR_LISTEN": "127.0.0.1:0"})
            self.assertEqual((loc.addr, loc.token), ("127.0.0.1:7999", "abc"))
            loc = sidecar.locate({}, {**env, "WA_SIDECAR_ADDR": "127.0.0.1:7392", "WA_SIDECAR_LISTEN": "127.0.0.1:7391"})
            self.assertEqual(loc.addr, "127.0.0.1:7392")
            # a sidecar on every address is asked through loopback: it refuses a Host of [::]
            for listen in ("[::]:7999", "0.0.0.0:7999"):
                Path(d, "sidecar.json").write_text(json.dumps({"listen": listen, "token_file": f"{d}/token", "pid": os.getpid()}))
                loc = sidecar.locate({}, env)
                self.assertEqual((loc.addr, loc.token, loc.url("/v1/status")), (listen, "abc", "http://127.0.0.1:7999/v1/status"))

    def test_locate_believes_only_files_others_cannot_plant(self):
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            env = {"WA_SIDECAR_STATE_DIR": d}
            disc, tok = Path(d, "sidecar.json"), Path(d, "token")
            tok.write_text("abc\n")

            def write(**kw):
                if disc.is_symlink() or disc.exists():
                    disc.unlink()
                disc.write_text(json.dumps({"listen": "127.0.0.1:7999", "token_file": str(tok), "pid": os.getpid(), **kw}))

            write()
            self.assertEqual(sidecar.locate({}, env).token, "abc")
            # Another machine's address: no token goes there, and the file is not followed.
            write(listen="192.0.2.7:7390")
            loc = sidecar.locate({}, env)
            self.assertEqual((loc.addr, loc.token), ("", None))
            self.assertIn("not an address of this machine", loc.missing)
            # A token file that is a link planted in the state directory is not read.
            write()
            with tempfile.TemporaryDirectory() as other:
                secret = Path(other, "secret")
                secret.write_text("root-only\n")
                tok.unlink()
                tok.symlink_to(secret)
                self.assertIsNone(sidecar.locate({}, env).token)
                # sidecar.json itself as a planted link is refused.
                real = Path(other, "sidecar.json")
                real.write_text(json.dumps({"listen": "127.0.0.1:7999", "pid": os.getpid()}))
                disc.unlink()
                disc.symlink_to(real)
                loc = sidecar.locate({}, env)
                self.assertEqual((loc.addr, loc.token), ("", None))
            # A file that a killed sidecar left names whatever listens at its address now: with a
            # pid that is gone, or reused by another process, it is read without the token.
            import subprocess
            tok.unlink()
            tok.write_text("abc\n")
            dead = subprocess.Popen(["true"])
            dead.wait()
            with open(f"/proc/{os.getpid()}/stat") as f:
                start = int(f.read().rsplit(")", 1)[1].split()[19])
            for kw in ({"pid": dead.pid}, {"pid": None}, {"start_time": start + 1}):
                write(**kw)
                loc = sidecar.locate({}, env)
                self.assertEqual((loc.addr, loc.token, loc.pid), ("127.0.0.1:7999", None, 0), kw)
            write(start_time=start)
            self.assertEqual(sidecar.locate({}, env).token, "abc")
            # A state directory everyone can write is not believed at all.
            write()
            os.chmod(d, 0o777)
            try:
                loc = sidecar.locate({}, env)
                self.assertEqual((loc.addr, loc.token), ("", None))
                self.assertIn("writable by other users", loc.missing)
            finally:
                os.chmod(d, 0o700)


class UnixPeer(unittest.IsolatedAsyncioTestCase):
    async def test_a_socket_another_process_serves_gets_nothing(self):
        """A Unix socket is a name in a directory: one put at the sidecar's path by whoever can write
        the directory, served by another process than the sidecar.json's, gets no request at all."""
        import subprocess
        import tempfile

        import aiohttp
        from aiohttp import web

        seen = []

        async def status(request):
            seen.append(request.headers.get("Authorization", ""))
            return web.json_response({"state": "running"})

        app = web.Application()
        app.router.add_get("/v1/status", status)
        runner = web.AppRunner(app)
        await runner.setup()
        other = subprocess.Popen(["sleep", "60"])
        try:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "s.sock")
                await web.UnixSite(runner, path).start()
                for pid, served in ((other.pid, False), (os.getpid(), True)):
                    loc = sidecar.Location("unix:" + path, "abc", "test", pid=pid)
                    async with aiohttp.ClientSession(connector=loc.connector()) as session:
                        try:
                            async with session.get(loc.url("/v1/status"), headers={"Authorization": "Bearer abc"}) as r:
                                got = r.status == 200
                        except aiohttp.ClientConnectionError as e:
                            self.assertIn("not by the sidecar", str(e))
                            got = False
                    self.assertEqual(got, served, f"served by pid {pid}")
        finally:
            other.kill()
            other.wait()
            await runner.cleanup()
        self.assertEqual(seen, ["Bearer abc"])


class FakeFeed:
    """A status server that sends the snapshots it is given, for states the real sidecar passes
    through too quickly to test against."""

    def __init__(self, *snapshots, gap=0.3):
        self.snapshots, self.gap = snapshots, gap

    async def __aenter__(self):
        from aiohttp import web

        async def events(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            for i, snap in enumerate(self.snapshots):
                if i:
                    await asyncio.sleep(self.gap)
                msg = {"type": "hello", "seq": 1} if i == 0 else {"type": "event", "seq": i + 1, "event": "health"}
                await ws.send_json(dict(msg, status=snap))
            async for _ in ws:  # until the client goes
                pass
            return ws

        app = web.Application()
        app.router.add_get("/v1/events", events)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = harness.free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.addr = f"127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.shutdown()
        await self.runner.cleanup()


class Lagging(Base):
    def snap(self, pid, bridge_pid):
        return {"state": "running", "pid": pid, "details": {
            "session": {"dir": str(self.world.session)},
            "whatsapp": {"connection": "connected", "health": "ok", "bridge_pid": bridge_pid, "port": self.world.bridge_port}}}

    async def test_old_bridges_details_do_not_attach(self):
        async with FakeFeed(self.snap(200, 100)) as feed:
            a = self.adapter(sidecar_addr=feed.addr, sidecar_wait=1)
            self.assertFalse(await a.connect())
            self.assertEqual(a.fatal_error_code, "whatsapp_sidecar_starting")
            self.assertTrue(a.fatal_error_retryable)

    async def test_attaches_once_the_details_are_the_new_bridges(self):
        async with FakeFeed(self.snap(200, 100), self.snap(200, 200)) as feed:
            a = self.adapter(sidecar_addr=feed.addr, sidecar_wait=3)
            self.assertTrue(await a.connect())
            self.assertNotIn("connected", [s[0] for s in a.statuses[:-1]])
            await a.disconnect()
            self.adapters.remove(a)


class StartOrders(Base):
    async def test_sidecar_first_attaches_at_once(self):
        self.world.start()
        self.world.wait_connected()
        a = self.adapter()
        t = time.monotonic()
        self.assertTrue(await a.connect())
        self.assertLess(time.monotonic() - t, 3)
        self.assertTrue(a.is_connected)
        await self.until(lambda: a.polls > 0, 5, "a successful poll")
        self.assertEqual(a._bridge_process, None)

    async def test_gateway_first_waits_for_the_sidecar(self):
        a = self.adapter()
        task = asyncio.create_task(a.connect())
        await asyncio.sleep(1.0)
        self.assertFalse(task.done(), "connect() waits for the sidecar instead of failing")
        await asyncio.get_running_loop().run_in_executor(None, self.world.start)
        self.assertTrue(await asyncio.wait_for(task, 15))
        self.assertTrue(a.is_connected)

    async def test_no_sidecar_is_a_retryable_explained_error(self):
        a = self.adapter(sidecar_wait=1)
        self.assertFalse(await a.connect())
        self.assertEqual(a.fatal_error_code, "whatsapp_sidecar_unreachable")
        self.assertTrue(a.fatal_error_retryable)
        self.assertIn("not reachable", a.fatal_error_message)
        self.assertIn("the gateway retries with its own backoff", a.fatal_error_message)
        self.assertNotIn("attaches once", a.fatal_error_message)
        self.assertIn(str(self.world.state), a.fatal_error_message)

    async def test_stopped_sidecar_is_not_replaced_by_the_default_address(self):
        # Another sidecar (another account's) answers at the default address; this gateway's
        # sidecar, named by its state directory, is stopped.
        self.world.start()
        self.world.wait_connected()
        saved, sidecar.DEFAULT_ADDR = sidecar.DEFAULT_ADDR, f"127.0.0.1:{self.world.listen_port}"
        self.addCleanup(setattr, sidecar, "DEFAULT_ADDR", saved)
        stopped = self.world.root / "stopped-state"
        stopped.mkdir()
        a = self.adapter(sidecar_wait=1, sidecar_state_dir=str(stopped))
        self.assertFalse(await a.connect())
        self.assertEqual(a.fatal_error_code, "whatsapp_sidecar_unreachable")
        self.assertTrue(a.fatal_error_retryable)
        self.assertIn(str(stopped / "sidecar.json"), a.fatal_error_message)
        self.assertEqual(a.polls, 0)

    async def test_sidecar_of_another_session_is_not_attached(self):
        self.world.start()
        self.world.wait_connected()
        other = self.world.root / "other" / "session"
        other.mkdir(parents=True)
        a = self.adapter(sidecar_wait=1, session_path=str(other), bridge_port=1)
        self.assertFalse(await a.connect())
        self.assertEqual(a.fatal_error_code, "whatsapp_sidecar_other_session")
        self.assertTrue(a.fatal_error_retryable)
        self.assertIn(str(self.world.session), a.fatal_error_message)
        self.assertIn(str(other), a.fatal_error_message)
        self.assertEqual(a._bridge_port, 1, "took the other session's bridge port")
        self.assertEqual(a.polls, 0)
        # the same session named through a symlink is the same session
        link = self.world.root / "link"
        link.symlink_to(self.world.session)
        b = self.adapter(session_path=str(link))
        self.assertTrue(await b.connect())

    async def test_bridge_in_backoff_is_retryable(self):
        self.world.start(sim_args="--connect-after 5s --crash exception --crash-after 100ms")
        self.world.wait_for(lambda: (self.world.status() or {}).get("state") == "backoff", 10, "backoff")
        a = self.adapter(sidecar_wait=0.5)
        self.assertFalse(await a.connect())
        self.assertTrue(a.fatal_error_retryable)
        self.assertTrue(a.fatal_error_code.startswith("whatsapp_sidecar_"), a.fatal_error_code)


class Following(Base):
    async def attached(self):
        self.world.start()
        self.world.wait_connected()
        a = self.adapter()
        self.assertTrue(await a.connect())
        return a

    async def test_bridge_killed_is_seen_and_reattached(self):
        a = await self.attached()
        pid = self.world.bridge_pid()
        os.kill(pid, signal.SIGKILL)
        await self.until(lambda: not a.is_connected, 3, "the adapter to see the bridge go")
        # The retryable status is written once the poll task is cancelled, a step after detaching.
        await self.until(lambda: "retrying" in self.states(a), 3, "a retrying status")
        await self.until(lambda: a.is_connected, 10, "the adapter to reattach")
        self.assertNotEqual(self.world.bridge_pid(), pid)
        # One poll may race the sidecar's word of the exit; none follow it.
        self.assertLessEqual(a.poll_errors, 1)

    async def test_sidecar_restart_is_seen_and_reattached(self):
        a = await self.attached()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.world.stop)
        await self.until(lambda: not a.is_connected, 3, "the adapter to see the sidecar go")
        self.assertEqual(a.statuses[-1][1], "whatsapp_sidecar_unreachable")
        await asyncio.sleep(1.0)
        await loop.run_in_executor(None, self.world.start)
        await self.until(lambda: a.is_connected, 15, "the adapter to reattach to the new sidecar")
        self.assertEqual(a.statuses[-1][0], "connected")

    async def test_logged_out_says_how_to_pair_then_resumes(self):
        self.world.start(sim_args="--connect-after 200ms --crash logout --crash-after 1500ms")
        self.world.wait_connected()
        a = self.adapter()
        self.assertTrue(await a.connect())
        await self.until(lambda: any(s[1] == "whatsapp_not_paired" for s in a.statuses), 10, "needs_pairing")
        state, code, msg = [s for s in a.statuses if s[1] == "whatsapp_not_paired"][-1]
        self.assertEqual(state, "retrying")
        self.assertIn("hermes whatsapp", msg)
        self.assertFalse(a.is_connected)
        # a new gateway connect now is told to pair, at once, and retried: the gateway must come
        # back once the sidecar resumes after a new pairing, or it drops WhatsApp (or exits 78)
        b = self.adapter()
        t = time.monotonic()
        self.assertFalse(await b.connect())
        self.assertLess(time.monotonic() - t, 5)
        self.assertEqual(b.fatal_error_code, "whatsapp_not_paired")
        self.assertTrue(b.fatal_error_retryable)
        self.assertIn("hermes whatsapp", b.fatal_error_message)

    async def test_disconnect_leaves_the_bridge_and_its_pidfile(self):
        a = await self.attached()
        pid = self.world.bridge_pid()
        pidfile = self.world.session / "bridge.pid"
        pidfile.write_text("12345\n1\n")
        await a.disconnect()
        self.adapters.remove(a)
        await asyncio.sleep(0.5)
        self.assertEqual(self.world.bridge_pid(), pid)
        self.assertEqual(pidfile.read_text(), "12345\n1\n")
        self.assertEqual(a.statuses[-1][0], "disconnected")


class Pairing(Base):
    paired = False

    async def test_pairing_is_retryable_then_attaches_once_scanned(self):
        self.world.start(sim_args="--connect-after 200ms --pair-after 2500ms --qr-every 1s")
        self.world.wait_for(lambda: ((self.world.status() or {}).get("details") or {}).get("whatsapp", {}).get("connection") == "pairing", 10, "pairing")
        a = self.adapter(sidecar_wait=0.5)
        self.assertFalse(await a.connect())
        self.assertEqual(a.fatal_error_code, "whatsapp_sidecar_pairing")
        self.assertTrue(a.fatal_error_retryable)
        b = self.adapter()
        self.assertTrue(await b.connect())


if __name__ == "__main__":
    unittest.main()
