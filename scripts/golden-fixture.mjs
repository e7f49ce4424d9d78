#!/usr/bin/env node
// Builds test/fixtures/kvpress-golden.json.gz from NVIDIA kvpress's golden outputs on stories260K
// (the directory given as argument, e.g. ../shared/kvpress-golden). Run once by a maintainer when
// the golden files change; the tests read only the compact fixture, never the source directory.
//
// Kept: token ids, the leverage sketch, and for every configuration what the tests compare
// (scores, kept/masked sets, ties, counts, checksums, skipped entries with kvpress's error).
// Dropped: float32 cross-checks, forward checks, file hashes, per-step decoding traces, block steps.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const dir = process.argv[2];
const out = process.argv[3] ?? new URL('../test/fixtures/kvpress-golden.json.gz', import.meta.url).pathname;
if (!dir) {
  console.error('usage: node scripts/golden-fixture.mjs GOLDEN_DIR [OUT.json.gz]');
  process.exit(2);
}

// Python's json writes Infinity / NaN bare; keep them as strings, the test decodes them.
const parse = (text) => JSON.parse(text.replace(/(?<=[\[,:]\s*)(-?Infinity|NaN)(?=\s*[\],}])/g, '"$1"'));

const DROP_LAYER = new Set(['n_f32_underflow', 'steps', 'fake_key_positions', 'fake_key_positions_not_masked_now']);
const DROP_TOP = new Set(['class', 'repr', 'constructor', 'compression_events', 'cache_len_trace', 'kvpress_files_sha256']);

// Many configurations share a scorer (Knorm inside five wrappers, SnapKV inside six), so each
// distinct per-head score array is stored once in \`scores\` and layers refer to it by index.
const pool = [], poolIndex = new Map();
const intern = (arr) => {
  const key = JSON.stringify(arr);
  if (!poolIndex.has(key)) { poolIndex.set(key, pool.length); pool.push(arr); }
  return poolIndex.get(key);
};
const SCORE_FIELDS = new Set(['scores', 'stage2_scores']);
const compactLayer = (l) => Object.fromEntries(Object.entries(l).filter(([k]) => !DROP_LAYER.has(k))
  .map(([k, v]) => [k, SCORE_FIELDS.has(k) && Array.isArray(v) ? v.map(intern) : v]));

const prompts = {};
for (const id of ['r1', 'r2', 'g1', 'g2']) {
  const g = parse(readFileSync(join(dir, `${id}.json`), 'utf8'));
  const presses = {};
  for (const [config, entry] of Object.entries(g.presses)) {
    const e = {};
    for (const [k, v] of Object.entries(entry)) {
      if (DROP_TOP.has(k)) continue;
      e[k] = k === 'layers' ? v.map(compactLayer) : v;
    }
    presses[config] = e;
  }
  prompts[id] = { n_tokens: g.n_tokens, token_ids: g.token_ids, phi: g.leverage_sketch.phi, presses };
}
const json = JSON.stringify({ source: 'NVIDIA kvpress 8bb29b9 (0.5.4) on stories260K, float64 run; see test/golden.test.ts', scores: pool, prompts });
const gz = gzipSync(json, { level: 9 });
writeFileSync(out, gz);
console.log(`${out}: ${json.length} bytes of JSON, ${gz.length} gzipped`);
