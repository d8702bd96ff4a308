'use strict';
// Test support: starts runtimes/node/server/server.js as a subprocess on 127.0.0.1 (port 0, read back
// from its start-up line) with a temporary function directory, and talks HTTP to it.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const SERVER = path.join(__dirname, '..', 'server', 'server.js');
const children = new Set();
process.on('exit', () => { for (const child of children) child.kill('SIGKILL'); });

async function startServer(files, env = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fnbuild-node-test-'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const child = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH, NODE_PATH: process.env.NODE_PATH || '', FUNC_DIR: dir, FUNC_HOST: '127.0.0.1', FUNC_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const srv = { child, dir, out: '' };
  srv.exited = new Promise((resolve) => child.on('close', (code, signal) => { // exited, output read
    children.delete(child);
    srv.closed = true;
    resolve({ code, signal });
  }));
  child.stdout.setEncoding('utf8').on('data', (d) => { srv.out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { srv.out += d; });
  srv.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await srv.exited;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const m = await waitForOutput(srv, /listening on \S+:(\d+)/);
    srv.url = `http://127.0.0.1:${m[1]}`;
  } catch (err) {
    await srv.stop();
    throw err;
  }
  return srv;
}

async function waitForOutput(srv, re, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = srv.out.match(re);
    if (m) return m;
    if (srv.closed || Date.now() > deadline) {
      throw new Error(`no ${re} in server output (exit code ${srv.child.exitCode}):\n${srv.out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function get(srv, pathAndQuery, init) {
  const res = await fetch(srv.url + pathAndQuery, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, type: res.headers.get('content-type') || '', headers: res.headers, body, text: body.toString() };
}

module.exports = { startServer, waitForOutput, get, SERVER };
