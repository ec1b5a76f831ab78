'use strict';
// The village week through PouchDB replication and through Automerge, for `python -m bench peers`.
//
//   node peers.js EDITS.json [--repeat N] [--warmup W]
//
// EDITS.json is what bench/peers.py exports: {"edits": [{op_id, week, type, _id, case_id,
// kind, doc, set}, ...]}, one per op of the laptop, in the order made; the history's
// edits (week: false) first. Prints one JSON object on stdout (medians over N rounds,
// default 3, each on fresh databases and documents, after W untimed warm-up rounds,
// default 1: the JIT and the WebAssembly compiler warmed, as in a peer that has been
// running a while); progress on stderr.
//
// PouchDB (pouchdb-core 9 with the memory adapter, the HTTP adapter and the replicator):
//   one document per record, _id = the record's id, body = the record after the edit
//   (`doc`, with `type`). Each edit is a put of a new revision on the source database.
//   * http: the target is an express-pouchdb server (memory adapter) in a child process
//     on 127.0.0.1 (pouch_server.js). The history is put and replicated first (not
//     timed); then the week's edits are put, and PouchDB.replicate(source, target) is
//     timed. bytes = every byte of every TCP connection the server accepted during that
//     replication, both ways, HTTP headers included (the server's socket counters).
//   * local: the same into a second memory database in this process (no wire).
//
// Automerge (@automerge/automerge 3, one document per case: {case: {...}, party: {id:
// {...}}, visit: {...}, mediation: {...}, ...}; one change per edit, setting the fields
// the edit changed, `set`; a field that became null is deleted). Peer B holds a copy of
// every case document as it was after the history (A.load(A.save(...)), not timed).
//   * changes: A.getChangesSince(doc, heads after the history) for each document the
//     week touched; bytes = the sum of the encoded changes; time = A.applyChanges on B.
//   * saveSince: A.saveSince(doc, heads) per document (the same changes in one compressed
//     chunk); time = A.loadIncremental on B.
//   * sync: Automerge's sync protocol between A and B for every document they hold, with
//     fresh sync states (a reconnect); bytes = every message both ways; time = B's
//     receiveSyncMessage calls (recv_s) and the whole message loop (seconds).
//   * save: A.save() of every document the week touched (an empty peer's download);
//     time = A.load() of them all.
//   * changes_immutable: as `changes`, with strings written as A.ImmutableString
//     (whole-value registers, like our fields) instead of collaborative text.

const fs = require('fs');
const path = require('path');
const { fork } = require('child_process');
const { performance } = require('perf_hooks');

const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));
const A = require('@automerge/automerge');

const ACTOR = '0a1b2c3d4e5f60718293a4b5c6d7e8f9'; // one fixed actor (the laptop): the same bytes each run

function say(msg) {
  process.stderr.write(`  ${msg}\n`);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function version(pkg) {
  return JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', pkg, 'package.json'), 'utf8')).version;
}

// ---------------------------------------------------------------------------
// PouchDB
// ---------------------------------------------------------------------------

let dbCounter = 0;

function memoryDb(label) {
  dbCounter += 1;
  return new PouchDB(`${label}-${process.pid}-${dbCounter}`, { adapter: 'memory' });
}

async function putEdits(db, edits, revs) {
  for (const e of edits) {
    const doc = { _id: e._id, type: e.type, ...e.doc };
    if (revs.has(e._id)) doc._rev = revs.get(e._id);
    const res = await db.put(doc);
    revs.set(e._id, res.rev);
  }
}

async function leafRevs(db) {
  const all = await db.allDocs();
  const out = new Map();
  for (const row of all.rows) out.set(row.id, row.value.rev);
  return out;
}

function sameRevs(a, b) {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

function startServer() {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'pouch_server.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('pouch_server.js did not start in 20 s'));
    }, 20000);
    child.once('message', (m) => {
      clearTimeout(timer);
      resolve({ child, port: m.port });
    });
    child.once('error', reject);
  });
}

function serverCounts(child) {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m.counts));
    child.send('counts');
  });
}

function stopServer(child) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.send('exit');
  });
}

async function pouchHttp(history, week) {
  const { child, port } = await startServer();
  try {
    const source = memoryDb('source');
    const target = new PouchDB(`http://127.0.0.1:${port}/minqing`);
    const revs = new Map();
    await putEdits(source, history, revs);
    await PouchDB.replicate(source, target); // the laptop's history, synced before the week
    await putEdits(source, week, revs);
    const before = await serverCounts(child);
    const t0 = performance.now();
    const res = await PouchDB.replicate(source, target);
    const seconds = (performance.now() - t0) / 1000;
    const after = await serverCounts(child);
    const byPath = {};
    for (const [k, v] of Object.entries(after.by_path)) {
      const n = v - (before.by_path[k] || 0);
      if (n) byPath[k] = n;
    }
    const targetRevs = await leafRevs(target);
    const sourceRevs = await leafRevs(source);
    await source.destroy();
    return {
      seconds,
      up: after.read - before.read,
      down: after.written - before.written,
      bytes: after.read - before.read + after.written - before.written,
      requests: after.requests - before.requests,
      connections: after.connections - before.connections,
      by_path: byPath,
      docs_written: res.docs_written,
      target_docs: targetRevs.size,
      same: sameRevs(sourceRevs, targetRevs),
    };
  } finally {
    await stopServer(child);
  }
}

async function pouchLocal(history, week) {
  const source = memoryDb('source');
  const target = memoryDb('target');
  const revs = new Map();
  await putEdits(source, history, revs);
  await PouchDB.replicate(source, target);
  await putEdits(source, week, revs);
  const t0 = performance.now();
  const res = await PouchDB.replicate(source, target);
  const seconds = (performance.now() - t0) / 1000;
  const same = sameRevs(await leafRevs(source), await leafRevs(target));
  await source.destroy();
  await target.destroy();
  return { seconds, docs_written: res.docs_written, same };
}

// ---------------------------------------------------------------------------
// Automerge
// ---------------------------------------------------------------------------

function value(v, immutable) {
  if (typeof v === 'string') return immutable ? new A.ImmutableString(v) : v;
  if (Array.isArray(v)) return v.map((x) => value(x, immutable));
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (x !== null) o[k] = value(x, immutable);
    return o;
  }
  return v;
}

function applyEdit(doc, e, immutable) {
  return A.change(doc, (d) => {
    let rec;
    if (e.type === 'case') {
      if (!d.case) d.case = {};
      rec = d.case;
    } else {
      if (!d[e.type]) d[e.type] = {};
      if (!d[e.type][e._id]) d[e.type][e._id] = {};
      rec = d[e.type][e._id];
    }
    for (const [k, v] of Object.entries(e.set)) {
      if (v === null) {
        if (k in rec) delete rec[k];
      } else {
        rec[k] = value(v, immutable);
      }
    }
  });
}

function buildDocs(docs, edits, immutable) {
  for (const e of edits) {
    const doc = docs.get(e.case_id) || A.init({ actor: ACTOR });
    docs.set(e.case_id, applyEdit(doc, e, immutable));
  }
}

function copyPeer(docs) {
  const out = new Map();
  for (const [k, d] of docs) out.set(k, A.load(A.save(d)));
  return out;
}

function sameDocs(a, b, keys) {
  for (const k of keys) {
    if (!b.has(k) || !a.has(k)) return false;
    if (JSON.stringify(A.getHeads(a.get(k)).sort()) !== JSON.stringify(A.getHeads(b.get(k)).sort())) return false;
    if (JSON.stringify(A.toJS(a.get(k))) !== JSON.stringify(A.toJS(b.get(k)))) return false;
  }
  return true;
}

function automerge(history, week, immutable) {
  const docs = new Map();
  buildDocs(docs, history, immutable);
  const heads = new Map();
  for (const [k, d] of docs) heads.set(k, A.getHeads(d));
  const peer = copyPeer(docs); // B: every case as it was after the history
  buildDocs(docs, week, immutable);
  const touched = [...new Set(week.map((e) => e.case_id))];

  // changes
  const changes = touched.map((k) => [k, A.getChangesSince(docs.get(k), heads.get(k) || [])]);
  let nChanges = 0;
  let changeBytes = 0;
  for (const [, cs] of changes) {
    nChanges += cs.length;
    for (const c of cs) changeBytes += c.length;
  }
  const b1 = copyPeer(peer);
  let t0 = performance.now();
  for (const [k, cs] of changes) b1.set(k, A.applyChanges(b1.get(k) || A.init(), cs)[0]);
  const applyS = (performance.now() - t0) / 1000;
  const out = {
    changes: { docs: touched.length, changes: nChanges, bytes: changeBytes, apply_s: applyS,
               same: sameDocs(docs, b1, touched) },
  };
  if (immutable) {
    freeAll(docs, peer, b1);
    return out;
  }

  // saveSince -> loadIncremental
  const chunks = touched.map((k) => [k, A.saveSince(docs.get(k), heads.get(k) || [])]);
  const b2 = copyPeer(peer);
  t0 = performance.now();
  for (const [k, data] of chunks) b2.set(k, A.loadIncremental(b2.get(k) || A.init(), data));
  out.save_since = { bytes: chunks.reduce((n, [, c]) => n + c.length, 0),
                     load_s: (performance.now() - t0) / 1000, same: sameDocs(docs, b2, touched) };

  // the sync protocol, every document both peers hold, fresh sync states
  const b3 = copyPeer(peer);
  let up = 0;
  let down = 0;
  let messages = 0;
  let recvS = 0;
  t0 = performance.now();
  for (const k of docs.keys()) {
    let a = docs.get(k);
    let b = b3.get(k) || A.init();
    let sa = A.initSyncState();
    let sb = A.initSyncState();
    for (let i = 0; i < 100; i++) {
      let msg;
      [sa, msg] = A.generateSyncMessage(a, sa);
      const fromA = msg;
      if (fromA) {
        up += fromA.length;
        messages += 1;
        const r0 = performance.now();
        [b, sb] = A.receiveSyncMessage(b, sb, fromA);
        recvS += (performance.now() - r0) / 1000;
      }
      [sb, msg] = A.generateSyncMessage(b, sb);
      const fromB = msg;
      if (fromB) {
        down += fromB.length;
        messages += 1;
        [a, sa] = A.receiveSyncMessage(a, sa, fromB);
      }
      if (!fromA && !fromB) break;
    }
    docs.set(k, a);
    b3.set(k, b);
  }
  const syncS = (performance.now() - t0) / 1000;
  out.sync = { bytes: up + down, up, down, messages, seconds: syncS, recv_s: recvS,
               docs: docs.size, same: sameDocs(docs, b3, [...docs.keys()]) };

  // save() of the week's documents, load() by an empty peer
  const saved = touched.map((k) => [k, A.save(docs.get(k))]);
  t0 = performance.now();
  const b4 = new Map();
  for (const [k, data] of saved) b4.set(k, A.load(data));
  out.save = { bytes: saved.reduce((n, [, s]) => n + s.length, 0), load_s: (performance.now() - t0) / 1000,
               same: sameDocs(docs, b4, touched), all_docs: docs.size,
               all_bytes: [...docs.values()].reduce((n, d) => n + A.save(d).length, 0) };
  freeAll(docs, peer, b1, b2, b3, b4);
  return out;
}

function freeAll(...maps) {
  // the documents' memory is WebAssembly memory, not the JS heap: free it, or each round
  // runs in a larger, more fragmented heap than the one before
  for (const m of maps) for (const d of m.values()) A.free(d);
}

// ---------------------------------------------------------------------------

async function main() {
  const args = process.argv.slice(2);
  if (args.length < 1) {
    process.stderr.write('usage: node peers.js EDITS.json [--repeat N]\n');
    process.exit(2);
  }
  const i = args.indexOf('--repeat');
  const repeat = i >= 0 ? Math.max(1, parseInt(args[i + 1], 10)) : 3;
  const j = args.indexOf('--warmup');
  const warmup = j >= 0 ? Math.max(0, parseInt(args[j + 1], 10)) : 1;
  const { edits } = JSON.parse(fs.readFileSync(args[0], 'utf8'));
  const history = edits.filter((e) => !e.week);
  const week = edits.filter((e) => e.week);
  for (let k = 0; k < warmup; k++) {
    say(`warm-up round ${k + 1} (not counted): PouchDB over HTTP, memory to memory, Automerge`);
    await pouchHttp(history, week);
    await pouchLocal(history, week);
    automerge(history, week, false);
    automerge(history, week, true);
  }
  const rounds = { http: [], local: [], am: [], ami: [] };
  for (let k = 0; k < repeat; k++) {
    say(`round ${k + 1}: PouchDB over HTTP (express-pouchdb on 127.0.0.1)`);
    rounds.http.push(await pouchHttp(history, week));
    say(`round ${k + 1}: PouchDB memory to memory`);
    rounds.local.push(await pouchLocal(history, week));
    say(`round ${k + 1}: Automerge`);
    rounds.am.push(automerge(history, week, false));
    rounds.ami.push(automerge(history, week, true));
  }
  const med = (xs, f) => median(xs.map(f));
  const h0 = rounds.http[0];
  const a0 = rounds.am[0];
  const out = {
    edits: { history: history.length, week: week.length, week_records: new Set(week.map((e) => e._id)).size,
             week_cases: new Set(week.map((e) => e.case_id)).size },
    warmup, rounds: repeat,
    versions: { node: process.version, pouchdb: version('pouchdb-core'), 'express-pouchdb': version('express-pouchdb'),
                automerge: version('@automerge/automerge') },
    pouchdb: {
      http: { ...h0, seconds: med(rounds.http, (r) => r.seconds), rounds: rounds.http.map((r) => r.seconds),
              same: rounds.http.every((r) => r.same) },
      local: { ...rounds.local[0], seconds: med(rounds.local, (r) => r.seconds),
               rounds: rounds.local.map((r) => r.seconds), same: rounds.local.every((r) => r.same) },
    },
    automerge: {
      changes: { ...a0.changes, apply_s: med(rounds.am, (r) => r.changes.apply_s),
                 rounds: rounds.am.map((r) => r.changes.apply_s), same: rounds.am.every((r) => r.changes.same) },
      save_since: { ...a0.save_since, load_s: med(rounds.am, (r) => r.save_since.load_s),
                    same: rounds.am.every((r) => r.save_since.same) },
      sync: { ...a0.sync, seconds: med(rounds.am, (r) => r.sync.seconds), recv_s: med(rounds.am, (r) => r.sync.recv_s),
              same: rounds.am.every((r) => r.sync.same) },
      save: { ...a0.save, load_s: med(rounds.am, (r) => r.save.load_s), same: rounds.am.every((r) => r.save.same) },
      changes_immutable: { ...rounds.ami[0].changes, apply_s: med(rounds.ami, (r) => r.changes.apply_s),
                           rounds: rounds.ami.map((r) => r.changes.apply_s),
                           same: rounds.ami.every((r) => r.changes.same) },
    },
  };
  // exit once written: the HTTP adapter's idle keep-alive sockets would hold the loop open
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
