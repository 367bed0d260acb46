// Listens on pm2's event bus for the benchmark (bench/wabench): prints
// "ready" once connected, then "exit MONOTONIC_NS PID" for each exit of a
// process pm2 runs. process.hrtime reads CLOCK_MONOTONIC on Linux, the
// clock the fake bridge stamps its exits with.
const pm2 = require('pm2');

pm2.connect((err) => {
  if (err) {
    console.error('pm2 connect:', err.message);
    process.exit(1);
  }
  pm2.launchBus((err, bus) => {
    if (err) {
      console.error('pm2 bus:', err.message);
      process.exit(1);
    }
    bus.on('process:event', (packet) => {
      const now = process.hrtime.bigint();
      if (packet.event === 'exit') {
        const pid = (packet.process && packet.process.pid) || 0;
        process.stdout.write(`exit ${now} ${pid}\n`);
      }
    });
    process.stdout.write('ready\n');
  });
});
