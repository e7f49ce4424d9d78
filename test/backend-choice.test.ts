import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BACKEND_ENV, backendInfo, createBackend } from '../src/backend/index.js';

/** Runs `fn` with KVPRESS_BACKEND set to `value` (or unset), restoring it afterwards. */
function withEnv<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env[BACKEND_ENV];
  if (value === undefined) delete process.env[BACKEND_ENV];
  else process.env[BACKEND_ENV] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env[BACKEND_ENV];
    else process.env[BACKEND_ENV] = saved;
  }
}

test('KVPRESS_BACKEND=js forces the TypeScript reference over any preference', () => {
  withEnv('js', () => {
    const b = createBackend({ prefer: 'native' });
    assert.equal(b.name, 'js');
    assert.match(b.description, /forced by KVPRESS_BACKEND=js/);
    const info = backendInfo();
    assert.equal(info.active, 'js');
    assert.equal(info.threads, 1);
  });
});

test('KVPRESS_BACKEND=wasm forces the WebAssembly kernels', () => {
  withEnv('wasm', () => assert.equal(createBackend().name, 'wasm'));
});

test('an unknown KVPRESS_BACKEND value is a clear error', () => {
  withEnv('gpu', () => {
    assert.throws(() => createBackend(), /^Error: KVPRESS_BACKEND=gpu is not one of native, wasm, js, auto$/);
    assert.equal(backendInfo().active, null);
  });
});

test('auto picks the first available of native, wasm, js', () => {
  withEnv(undefined, () => {
    const info = backendInfo();
    const want = info.backends.native.available ? 'native' : 'wasm';
    assert.equal(info.active, want);
    assert.equal(createBackend().name, want);
  });
});

test('without the addon, auto falls back to wasm and says why; forcing native is an error', () => {
  // A copy of the compiled backend in a package folder that has no build/Release addon, as
  // after an install on a machine with no compiler.
  const here = dirname(fileURLToPath(import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'kvpress-fallback-'));
  try {
    cpSync(join(here, '..', 'src', 'backend'), join(dir, 'dist', 'src', 'backend'), { recursive: true });
    cpSync(join(here, '..', 'src', 'cache'), join(dir, 'dist', 'src', 'cache'), { recursive: true });
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'kvpress-ts', type: 'module' }));
    mkdirSync(join(dir, 'build'));
    writeFileSync(join(dir, 'build', 'native-build.json'), JSON.stringify({ reason: 'node-gyp failed: make: not found' }));
    const script = `import('./dist/src/backend/index.js').then((m) => {
      const info = m.backendInfo();
      let forced = '';
      process.env.KVPRESS_BACKEND = 'native';
      try { m.createBackend(); } catch (e) { forced = e.message; }
      console.log(JSON.stringify({ info, forced }));
    });`;
    const env = { ...process.env };
    delete env[BACKEND_ENV];
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, env, encoding: 'utf8' }));
    assert.equal(out.info.active, 'wasm');
    assert.equal(out.info.backends.native.available, false);
    assert.match(out.info.reason, /native: addon not built \(node-gyp failed: make: not found\)/);
    assert.match(out.forced, /KVPRESS_BACKEND=native: the native backend is unavailable: addon not built/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
