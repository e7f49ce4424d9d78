/**
 * `npm run bench:tokenizer`: llama2.c tokenizer throughput (one thread) on story text of 12.5k,
 * 100k and 10M characters, and on 10⁶/10⁷ characters with no space to split at (one CJK
 * character, three byte-fallback tokens each). `--big` adds the 10⁷ runs.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/model/load.js';
import { loadLlama2cTokenizer } from '../src/tokenizer/llama2c.js';

const root = packageRoot();
const tok = loadLlama2cTokenizer(join(root, 'models/stories260K/tok512.bin'), 512);
const story = readFileSync(join(root, 'examples/story.txt'), 'utf8');
const text = (n: number) => story.repeat(Math.ceil(n / story.length)).slice(0, n);
const cases: [string, string][] = [
  ['story 12.5k chars', text(12_500)],
  ['story 100k chars', text(100_000)],
  ['story 10M chars', text(10_000_000)],
  ['漢 × 10⁶ (no spaces)', '漢'.repeat(1_000_000)],
];
if (process.argv.includes('--big')) cases.push(['漢 × 10⁷ (no spaces)', '漢'.repeat(10_000_000)], ['a–j × 10⁶ (10⁷ chars, no spaces)', 'abcdefghij'.repeat(1_000_000)]);
for (const [name, t] of cases) {
  // CPU time as well as wall time: on a shared machine the wall clock measures the neighbours.
  const t0 = performance.now(), c0 = process.cpuUsage();
  const n = tok.encode(t).length;
  const c = process.cpuUsage(c0), cpu = (c.user + c.system) / 1e6, s = (performance.now() - t0) / 1000;
  console.log(`${name.padEnd(34)} wall ${s.toFixed(3).padStart(7)} s  cpu ${cpu.toFixed(3).padStart(7)} s  ${(t.length / cpu / 1e6).toFixed(2).padStart(6)} M chars/cpu-s  ${n} tokens`);
}
