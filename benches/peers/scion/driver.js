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

// SCION keeps data model variables in the prepared model, so each round
// prepares a fresh one (outside the timed part).
function prepare(model) {
  return new Promise((resolve, reject) => {
    model.prepare((err, fnModel) => (err ? reject(err) : resolve(fnModel)));
  });
}

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
