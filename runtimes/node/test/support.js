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

// KYMA_NODE_SERVER=<dir of Kyma's components/runtimes/nodejs24, npm-installed, its port made
// KYMA_TEST_PORT> runs Kyma's own server instead of ours (to check that tests expect Kyma's answers).
const KYMA = process.env.KYMA_NODE_SERVER;
let kymaPort = 18100;

async function startServer(files, env = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fnbuild-node-test-'));
  let fnDir = dir;
  let cmd = [SERVER];
  let extra = {};
  if (KYMA) {
    for (const f of ['server.mjs', 'package.json']) fs.copyFileSync(path.join(KYMA, f), path.join(dir, f));
    for (const f of ['lib', 'node_modules']) fs.symlinkSync(path.join(KYMA, f), path.join(dir, f));
    fnDir = path.join(dir, 'function');
    fs.mkdirSync(fnDir);
    cmd = [path.join(dir, 'server.mjs')];
    extra = { HANDLER_PATH: './function/handler.js', KYMA_TEST_PORT: String(kymaPort++) };
  }
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(fnDir, name), text);
  const child = spawn(process.execPath, cmd, {
    env: { PATH: process.env.PATH, NODE_PATH: process.env.NODE_PATH || '', FUNC_DIR: dir, FUNC_HOST: '127.0.0.1', FUNC_PORT: '0', ...extra, ...env },
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
    if (KYMA) {
      await waitForOutput(srv, /user code loaded/);
      srv.url = `http://127.0.0.1:${extra.KYMA_TEST_PORT}`;
      for (let i = 0; i < 100 && !(await fetch(`${srv.url}/healthz`).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 20));
    } else {
      const m = await waitForOutput(srv, /listening on \S+:(\d+)/);
      srv.url = `http://127.0.0.1:${m[1]}`;
    }
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
