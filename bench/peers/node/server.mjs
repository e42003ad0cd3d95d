// Comparison peer for bench/compare.py: the broadcast server a team writes by hand in Node.js.
//
// One pg client LISTENs on the channel of its own row trigger (bench/peers/triggers.sql), whose
// payload is the new message as JSON; each notification becomes one text frame shaped like
// pgcast's, sent to every open socket of a ws server. No auth, no replay, no backpressure.
//
//   DATABASE_URL=postgresql://... HOST=127.0.0.1 PORT=8090 node server.mjs
//
// GET /ready answers 200 {"sockets": N} once LISTEN is in place; sockets are on GET /ws and get
// {"event":"connected",...} first, after which they receive every notification.

import http from 'node:http';
import pg from 'pg';
import { WebSocket, WebSocketServer } from 'ws';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8090);
const CHANNEL = process.env.NOTIFY_CHANNEL ?? 'node_messages';
const PING_INTERVAL_MS = 30_000;

const CONNECTED = JSON.stringify({ event: 'connected', channel: '', data: {} });
const NEW_MESSAGE = '{"event":"new-message","channel":"messages","data":{"message":';

let listening = false;

const server = http.createServer((request, response) => {
  if (request.method === 'GET' && request.url === '/ready') {
    response.writeHead(listening ? 200 : 503, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ sockets: wss.clients.size }));
    return;
  }
  response.writeHead(404).end();
});

const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('error', (error) => console.error('socket error:', error.message));
  ws.send(CONNECTED);
});

// The heartbeat from ws's README: drop peers that stopped answering pings.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_INTERVAL_MS);

const db = new pg.Client({
  connectionString: process.env.DATABASE_URL,
  application_name: 'node-peer',
});

db.on('notification', ({ payload }) => {
  const frame = `${NEW_MESSAGE}${payload}}}`;
  for (const ws of wss.clients) {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
  }
});

db.on('error', (error) => {
  // No reconnect: notifications sent while it is down would be lost anyway.
  console.error('database connection error:', error.message);
  process.exit(1);
});

async function shutdown() {
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close();
  await db.end().catch(() => {});
  process.exit(0);
}

process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);

await db.connect();
await db.query(`LISTEN ${db.escapeIdentifier(CHANNEL)}`);
server.listen(PORT, HOST, () => {
  listening = true;
  console.error(`node peer on http://${HOST}:${PORT}, LISTEN ${CHANNEL}`);
});
