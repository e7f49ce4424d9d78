import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { packageRoot } from '../src/model/load.js';
import { runCli } from './helpers/cli.js';

const root = packageRoot();
const readme = readFileSync(join(root, 'README.md'), 'utf8');

test('every TypeScript example in the README runs', () => {
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 4, `found ${blocks.length} examples`);
  // Inside the package, so that `import … from 'kvpress-ts'` resolves to this build.
  const dir = mkdtempSync(join(root, 'dist', 'readme-'));
  try {
    blocks.forEach((src, i) => {
      const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
      const file = join(dir, `example-${i}.mjs`);
      writeFileSync(file, js);
      const r = spawnSync(process.execPath, [file], { cwd: root, encoding: 'utf8', env: { ...process.env, KVPRESS_BACKEND: 'js' }, timeout: 120_000 });
      assert.equal(r.status, 0, `README example ${i + 1} failed:\n${src}\n${r.stderr}`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every flag of every command is documented in the README', async () => {
  const help = await runCli(['--help']);
  const commands = [...help.stdout.matchAll(/^ {2}(\w+) {2,}/gm)].map((m) => m[1]);
  assert.ok(commands.length >= 9, help.stdout);
  for (const c of commands) {
    const usage = (await runCli([c, '--help'])).stdout;
    for (const flag of new Set(usage.match(/--[a-z][a-z-]*/g) ?? [])) {
      assert.ok(readme.includes(flag), `README does not mention ${flag} of kvpress ${c}`);
    }
    assert.ok(readme.includes(`kvpress ${c}`), `README does not mention kvpress ${c}`);
  }
});
