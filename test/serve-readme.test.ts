import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { packageRoot } from '../src/model/load.js';
import { startServer } from './helpers/serve.js';

const root = packageRoot();
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('\n## Serve\n'), readme.indexOf('\n## ', readme.indexOf('\n## Serve\n') + 5));
const README_URL = 'http://127.0.0.1:8080';

test("the README's Serve examples (curl and the openai client) run against a real server", async () => {
  const curls = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]).filter((b) => b.includes('curl'));
  const js = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.equal(curls.length, 2);
  assert.equal(js.length, 1);
  const server = await startServer();
  const dir = mkdtempSync(join(root, 'dist', 'readme-serve-'));
  try {
    const sh = (src: string) => spawnSync('bash', ['-euo', 'pipefail', '-c', src.replaceAll(README_URL, server.url)], { encoding: 'utf8', timeout: 60_000 });
    const one = sh(curls[0]);
    assert.equal(one.status, 0, one.stderr);
    const r = JSON.parse(one.stdout);
    assert.equal(r.usage.kvpress.press, 'expected_attention');
    assert.ok(r.choices[0].message.content.length > 0);
    const two = sh(curls[1]);
    assert.equal(two.status, 0, two.stderr);
    assert.equal(two.stdout.match(/data: \[DONE\]/g)?.length, 2, two.stdout);
    assert.match(two.stdout, /"deleted":true/);

    const file = join(dir, 'openai-example.mjs');
    writeFileSync(file, js[0].replaceAll(README_URL, server.url));
    const node = spawnSync(process.execPath, [file], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(node.status, 0, node.stderr);
    assert.match(node.stdout, /^context ctx-\w+: \d+ tokens, \d+ of \d+ KV entries kept, \d+ bytes\n/);
    assert.match(node.stdout, /press: 'snapkv'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    assert.equal(await server.stop(), 0);
  }
});
