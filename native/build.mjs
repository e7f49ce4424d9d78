// Install-time build of the native addon (`npm install` runs it). It never fails the install:
// without a compiler the package falls back to its WebAssembly kernels, and the
// reason is left in build/native-build.json for `kvpress info` to show.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const status = join(root, 'build', 'native-build.json');

function giveUp(reason) {
  mkdirSync(dirname(status), { recursive: true });
  writeFileSync(status, JSON.stringify({ reason }) + '\n');
  console.warn(`kvpress-ts: native backend not built (${reason}); using the WebAssembly kernels instead`);
  process.exit(0);
}

if (process.env.KVPRESS_SKIP_NATIVE) giveUp('KVPRESS_SKIP_NATIVE is set');

// A package that ships a prebuilt addon for this platform (prebuilds/<platform>-<arch>/, the
// prebuildify / node-gyp-build convention) installs without a compiler.
const prebuilds = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
if (existsSync(prebuilds) && readdirSync(prebuilds).some((f) => f.endsWith('.node'))) process.exit(0);

// npm hands its bundled node-gyp to install scripts; otherwise look beside this node.
const bundled = resolve(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (existsSync(bundled) ? bundled : null);
const args = ['rebuild'];
// Build against the headers installed with node rather than downloading them.
const prefix = resolve(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

const run = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, encoding: 'utf8' })
  : spawnSync('node-gyp', args, { cwd: root, encoding: 'utf8', shell: process.platform === 'win32' });
if (run.error) giveUp(`node-gyp could not start: ${run.error.message}`);
if (run.status === 0) {
  rmSync(status, { force: true });
  process.exit(0);
}
giveUp(`node-gyp failed: ${diagnose(`${run.stdout}\n${run.stderr}`, run.status)}`);

/** The line of the build log that says what is missing. */
function diagnose(log, code) {
  const lines = log.split('\n');
  const lib = /cannot find -l(\S+)/.exec(log);
  if (lib) return `library ${lib[1]} not found`;
  const patterns = [/fatal error: (.*)/, /\b((?:make|g\+\+|c\+\+|cc|gcc|python3?): (?:not found|No such file or directory))/, /(not found: .*)/, /gyp ERR! stack Error: (.*)/, /error: (.*)/i];
  for (const p of patterns) {
    for (const l of lines) {
      const m = p.exec(l);
      if (m) return m[1].trim();
    }
  }
  return `exit code ${code}`;
}
