'use strict';
// A CouchDB-style HTTP server for the bench: express-pouchdb ("minimumForPouchDB" mode:
// the routes PouchDB's replicator uses, with response compression) over PouchDB's memory
// adapter, on 127.0.0.1 and a free port. Run by peers.js with child_process.fork; it
// counts the bytes of every TCP connection it accepts (socket.bytesRead/bytesWritten:
// HTTP headers and bodies, as they cross the wire) and each request's route, and tells
// them over the IPC channel. It exits when its parent says so or goes away.

const express = require('express');
const expressPouchDB = require('express-pouchdb');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-replication'));

const MemPouch = PouchDB.defaults({ adapter: 'memory' });
const app = express();
const byPath = {};

function route(url) {
  const p = url.split('?')[0].split('/').filter(Boolean);
  if (p.length === 0) return '/';
  if (p.length === 1) return '/db';
  if (p[1] === '_local') return '/db/_local';
  return '/db/' + (p[1].startsWith('_') ? p[1] : 'doc');
}

app.use((req, res, next) => {
  const key = `${req.method} ${route(req.url)}`;
  byPath[key] = (byPath[key] || 0) + 1;
  next();
});
app.use(expressPouchDB(MemPouch, { mode: 'minimumForPouchDB', inMemoryConfig: true, logPath: '/dev/null' }));

const sockets = [];
const server = app.listen(0, '127.0.0.1', () => {
  process.send({ port: server.address().port });
});
server.on('connection', (s) => sockets.push(s));

function counts() {
  let read = 0;
  let written = 0;
  for (const s of sockets) {
    read += s.bytesRead;
    written += s.bytesWritten;
  }
  const requests = Object.values(byPath).reduce((a, b) => a + b, 0);
  return { read, written, connections: sockets.length, requests, by_path: { ...byPath } };
}

process.on('message', (m) => {
  if (m === 'counts') process.send({ counts: counts() });
  if (m === 'exit') {
    for (const s of sockets) s.destroy();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  }
});
process.on('disconnect', () => process.exit(0));
