// bench/sio-server.mjs - the Socket.IO side of bench 3: one Socket.IO node
// with @socket.io/redis-adapter on ioredis (the client its documentation
// recommends; node-redis v4 collapsed under this load), doing what an edge + bridge do for a chat
// between two users: each socket joins the room of its user (auth.user);
// a 'msg' {to, body, id} is emitted to room 'u:<to>' (through Redis when
// that user sits on another node) as 'msg' {from, body, id}, and the sender
// gets an acknowledgement (the Socket.IO ack callback), like a phone's ack.
//   node sio-server.mjs --port P --redis-port R
// Prints "listening port=P" on stderr.
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';

const arg = (k, d) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1] : d; };
const port = Number(arg('port', 0));
const redisPort = Number(arg('redis-port', 6379));

const pub = new Redis({ host: '127.0.0.1', port: redisPort });
const sub = pub.duplicate();
pub.on('error', (e) => console.error('sio redis:', e.message));
sub.on('error', (e) => console.error('sio redis sub:', e.message));
await Promise.all([new Promise((r) => pub.once('ready', r)), new Promise((r) => sub.once('ready', r))]);

const http = createServer();
const io = new Server(http, { adapter: createAdapter(pub, sub), serveClient: false, transports: ['websocket'] });
io.on('connection', (socket) => {
  const user = String(socket.handshake.auth?.user ?? '');
  socket.join(`u:${user}`);
  socket.on('msg', (m, ack) => {
    io.to(`u:${m.to}`).emit('msg', { from: user, body: m.body, id: m.id });
    if (typeof ack === 'function') ack({ id: m.id });
  });
});
http.listen(port, '127.0.0.1', () => console.error(`listening port=${http.address().port}`));
const stop = () => {
  setTimeout(() => process.exit(0), 500).unref();
  io.close(); pub.disconnect(); sub.disconnect();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
