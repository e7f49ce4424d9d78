import assert from 'node:assert/strict';
import test from 'node:test';
import { FAMILIES } from '../src/fuzz/families.js';
import { fuzzFamily } from '../src/fuzz/run.js';

// A seeded subset of `npm run fuzz` (which runs ≥ 200,000 inputs per family; docs/fuzz.md):
// every mutant must load or be rejected with a one-line Error naming the file.
const COUNT = 1500;

for (const f of FAMILIES) {
  test(`fuzz ${f.name}: ${COUNT} mutants, no crash, no hang`, async () => {
    const r = await fuzzFamily(f.name, { count: COUNT, seed: 20261202 });
    assert.equal(r.inputs, COUNT);
    assert.deepEqual(r.examples, [], 'crashes or hangs');
    assert.equal(r.crash + r.hang, 0);
    assert.ok(r.ok > 0 && r.typed > 0, `both outcomes reached: ${r.ok} loaded, ${r.typed} rejected`);
  });
}
