// Drives SCION synchronously with gen() for the ors benchmark comparison.
// Usage: node driver.js WORKLOAD FILE EVENTS ROUNDS
// Prints one JSON line like `ors bench` does, after checking that the run
// really happened (final configuration / counter value).
'use strict';
const scxml = require('@scion-scxml/scxml');

const [workload, file, eventsArg, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg || 5);
let events = Number(eventsArg || 100000);

const names = {
  'ping-pong': ['t'],
  'ping-pong-data': ['t'],
  'deep-wide': ['e0', 'e1', 'e2', 'e3'],
  'load-1000': [],
  'start-sessions': [],
}[workload];
if (!names) {
  console.error(`unknown workload ${workload}`);
  process.exit(2);
}
if (workload === 'deep-wide') events -= events % 4;

function fail(message) {
  console.error(`scion ${workload}: ${message}`);
  process.exit(1);
}

function stats(results) {
  const sorted = results.slice().sort((a, b) => a - b);
  return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1], rounds: results };
}

function toModel(text) {
  return new Promise((resolve, reject) => {
    scxml.documentStringToModel(file, text, (err, model) => (err ? reject(err) : resolve(model)));
  });
}

// Workload 4a: parse, prepare and start a ~1 000-state document, N times.
async function loadLarge() {
  const text = require('fs').readFileSync(file, 'utf8');
  const n = Math.max(1, events);
  const results = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const fnModel = await prepare(await toModel(text));
      const sc = new scxml.core.Statechart(fnModel);
      sc.start();
      // getConfiguration() lists the active atomic states.
      const config = sc.getConfiguration().join();
      if (config !== 'g0_s0') fail(`started in ${config}`);
    }
    results.push(n / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  console.log(JSON.stringify({ engine: 'scion', mode: 'in-process', workload, unit: 'loads/s',
    check: 'the large document parsed, prepared and started in g0_s0', result: stats(results) }));
}

// Workload 4b: start N sessions of the callback-like chart and keep them.
async function startSessions() {
  const model = await new Promise((resolve, reject) =>
    scxml.pathToModel(file, (err, m) => (err ? reject(err) : resolve(m))));
  const fnModel = await prepare(model);
  const n = events;
  const results = [];
  let perSession = 0;
  for (let r = 0; r < rounds; r++) {
    const before = process.memoryUsage().rss;
    const live = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const sc = new scxml.core.Statechart(fnModel);
      sc.start();
      live.push(sc);
    }
    results.push(n / (Number(process.hrtime.bigint() - t0) / 1e9));
    if (r === 0) perSession = (process.memoryUsage().rss - before) / 1024 / n;
    if (live.some((sc) => sc.getConfiguration().join() !== 'waiting')) fail('a session did not start in waiting');
  }
  console.log(JSON.stringify({ engine: 'scion', mode: 'in-process', workload, unit: 'starts/s',
    check: `${n} live sessions in 'waiting'`, result: stats(results), rss_per_live_session_kib: perSession }));
  // The sessions' pending one-hour timers would keep node alive.
  process.exit(0);
}

if (workload === 'load-1000') {
  loadLarge().catch((e) => fail(String(e)));
} else if (workload === 'start-sessions') {
  startSessions().catch((e) => fail(String(e)));
} else {
  runEvents();
}

// SCION keeps data model variables in the prepared model, so each round
// prepares a fresh one (outside the timed part).
function prepare(model) {
  return new Promise((resolve, reject) => {
    model.prepare((err, fnModel) => (err ? reject(err) : resolve(fnModel)));
  });
}

function runEvents() {
scxml.pathToModel(file, async (err, model) => {
  if (err) fail(String(err));
  {
    const prepared = names.map((name) => ({ name }));
    const results = [];
    let check = '';
    for (let r = 0; r < rounds; r++) {
      let fnModel;
      try {
        fnModel = await prepare(model);
      } catch (e) {
        fail(String(e));
      }
      const sc = new scxml.core.Statechart(fnModel);
      sc.start();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < events; i++) sc.gen(prepared[i % prepared.length]);
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      results.push(events / secs);
      const config = sc.getConfiguration().slice().sort();
      if (workload === 'ping-pong') {
        const expected = events % 2 === 0 ? 'a' : 'b';
        if (config.join() !== expected) fail(`ended in ${config}`);
        check = `configuration [${expected}] after ${events} events`;
      } else if (workload === 'ping-pong-data') {
        const n = sc.getSnapshot()[3].n;
        if (n !== events) fail(`n is ${n}, expected ${events}`);
        check = `n == ${events}`;
      } else {
        const atomic = config.filter((s) => /_[xy]$/.test(s));
        if (atomic.join(' ') !== 'r0_x r1_x r2_x r3_x') fail(`ended in ${atomic}`);
        check = `atomic [r0_x r1_x r2_x r3_x] after ${events} events`;
      }
    }
    const sorted = results.slice().sort((a, b) => a - b);
    console.log(JSON.stringify({
      engine: 'scion',
      mode: 'in-process',
      workload,
      unit: 'events/s',
      check,
      result: { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1], rounds: results },
    }));
  }
});
}
