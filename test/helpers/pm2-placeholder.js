#!/usr/bin/env node
// Stand-in for bin/mnist-ddp.js in pm2 tests: `coordinator` or `worker` as argv[2], serves /metrics on the port the
// real process would use and prints its configuration as one JSON line, so tests can check what pm2 passed in.
import { createServer } from 'node:http';

const role = process.argv[2] ?? 'unknown';
const instance = Number(process.env.NODE_APP_INSTANCE ?? '0');
const port =
  role === 'coordinator'
    ? Number(process.env.MNIST_DDP_COORDINATOR_METRICS_PORT)
    : Number(process.env.MNIST_DDP_METRICS_PORT) + instance;
const picked = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k.startsWith('MNIST_DDP_') || k === 'NODE_APP_INSTANCE' || k === 'pm_id'),
);

const server = createServer((req, res) => {
  if (req.url === '/metrics') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(`# HELP placeholder_up Placeholder process is up.\n# TYPE placeholder_up gauge\nplaceholder_up{role="${role}",instance_index="${instance}"} 1\n`);
  } else if (req.url === '/healthz') {
    res.end(JSON.stringify({ role, instance, pid: process.pid, env: picked }));
  } else {
    res.writeHead(404).end();
  }
});
server.listen(port, process.env.MNIST_DDP_METRICS_HOST ?? '127.0.0.1', () => {
  console.log(JSON.stringify({ role, instance, port, pid: process.pid, env: picked }));
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
