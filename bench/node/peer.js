// The benchmark's Node.js peer: the `ws` package (with `bufferutil`), doing the same job as
// bench/peer_server.py, in the same mini-protocol.
//
//     node bench/node/peer.js [--port P] -- AGENT_COMMAND...
//
// It runs an agent, turns each stdout line into an event of the same JSON shape as hived's
// (type, topic, seq, ts, kind, session, data), encodes it once (JSON.stringify, then one
// Buffer) and sends that Buffer to every connection that subscribed, as a text frame. It
// answers `subscribe` (any topic: every subscriber gets every event), `session.start {args}`
// (runs AGENT_COMMAND with args appended; answers {session, state}) and `session.input
// {session, text}` (one line on the agent's stdin). No auth, no store, no replay, no bounds: a
// measure of the transport. Prints {"listening": PORT} on stdout once it accepts connections;
// stops on SIGTERM/SIGINT, killing its agents.
'use strict';

const { spawn } = require('node:child_process');
// ws masks and unmasks with bufferutil when it can load it; require it here so that a peer
// without it fails at start rather than measuring ws's JavaScript fallback.
require('bufferutil');
const { WebSocketServer } = require('ws');

const argv = process.argv.slice(2);
const dashes = argv.indexOf('--');
if (dashes < 0 || dashes === argv.length - 1) {
  process.stderr.write('usage: node peer.js [--port P] -- AGENT_COMMAND...\n');
  process.exit(2);
}
const portAt = argv.indexOf('--port');
const port = portAt >= 0 && portAt < dashes ? Number(argv[portAt + 1]) : 0;
const agentCommand = argv.slice(dashes + 1);

const subscribers = new Set();
const agents = new Map();
let nextId = 1;

function start(args) {
  const session = 'node' + String(nextId++).padStart(6, '0');
  const topic = 'session/' + session;
  const proc = spawn(agentCommand[0], [...agentCommand.slice(1), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  agents.set(session, proc);
  let seq = 0;
  let partial = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop();
    for (const line of lines) {
      seq += 1;
      const event = {
        type: 'event',
        topic,
        seq,
        ts: new Date().toISOString(),
        kind: 'text',
        session,
        data: { line },
      };
      const data = Buffer.from(JSON.stringify(event));
      for (const ws of subscribers) ws.send(data, { binary: false });
    }
  });
  proc.on('exit', () => agents.delete(session));
  return session;
}

function answer(ws, request) {
  const { type, id } = request;
  if (type === 'subscribe') {
    subscribers.add(ws);
    return { type: 'result', id, result: { topic: request.topic } };
  }
  if (type === 'session.start') {
    const session = start((request.args || []).map(String));
    return { type: 'result', id, result: { session, state: 'RUNNING' } };
  }
  if (type === 'session.input') {
    const proc = agents.get(String(request.session));
    if (!proc) return { type: 'error', id, code: 'not_found', message: 'no session' };
    proc.stdin.write(String(request.text ?? '') + '\n');
    return { type: 'result', id, result: { session: request.session } };
  }
  return { type: 'error', id, code: 'unknown_type', message: String(type) };
}

const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
server.on('connection', (ws) => {
  ws.on('message', (message) => {
    let reply;
    try {
      reply = answer(ws, JSON.parse(message.toString()));
    } catch (err) {
      reply = { type: 'error', id: null, code: 'bad_request', message: String(err) };
    }
    ws.send(JSON.stringify(reply));
  });
  ws.on('close', () => subscribers.delete(ws));
  ws.on('error', () => subscribers.delete(ws));
});
server.on('listening', () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + '\n');
});

function stop() {
  for (const proc of agents.values()) proc.kill('SIGKILL');
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
