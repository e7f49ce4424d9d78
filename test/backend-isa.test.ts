import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { backendInfo } from '../src/backend/index.js';

// The native addon runs the widest kernels the CPU has; the AVX2 and baseline builds of the
// same source are checked here by rerunning the equivalence tests with the choice capped.
const here = dirname(fileURLToPath(import.meta.url));
const native = backendInfo({ prefer: 'auto' }).backends.native;

for (const isa of process.arch === 'x64' ? ['avx2', 'base'] : ['base']) {
  test(`native ${isa} kernels match the TypeScript reference`, { skip: native.available ? false : native.detail }, () => {
    // A plain run of the file (node:test sets a failing exit code); without the runner's
    // NODE_TEST_CONTEXT, which would make the child report to a parent that is not listening.
    const env: NodeJS.ProcessEnv = { ...process.env, KVPRESS_NATIVE_ISA: isa, KVPRESS_BACKEND: '' };
    delete env.NODE_TEST_CONTEXT;
    const r = spawnSync(process.execPath, [join(here, 'backend.test.js')], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, `${isa}:\n${r.stdout.split('\n').filter((l) => /not ok|error|Error/.test(l)).join('\n')}`);
  });
}
