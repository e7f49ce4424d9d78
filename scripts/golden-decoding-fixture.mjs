#!/usr/bin/env node
// Builds test/fixtures/kvpress-golden-decoding.json.gz: the per-step traces of NVIDIA kvpress's
// decoding configurations (`kind: decoding` in ../shared/kvpress-golden, README there), which
// scripts/golden-fixture.mjs leaves out. Per prompt and configuration: the cache length after every
// forward, and per compression and layer the cache's slot → position map, n_kept and the ties at the
// boundary. Scores are kept only for the first compression of head-adaptive (AdaKV) runs, the one
// step whose cache the port shares with kvpress (later ones hold kvpress's fake keys).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const dir = process.argv[2];
const out = process.argv[3] ?? new URL('../test/fixtures/kvpress-golden-decoding.json.gz', import.meta.url).pathname;
if (!dir) {
  console.error('usage: node scripts/golden-decoding-fixture.mjs GOLDEN_DIR [OUT.json.gz]');
  process.exit(2);
}
const parse = (text) => JSON.parse(text.replace(/(?<=[\[,:]\s*)(-?Infinity|NaN)(?=\s*[\],}])/g, '"$1"'));

const prompts = {};
for (const id of ['r1', 'r2', 'g1', 'g2']) {
  const g = parse(readFileSync(join(dir, `${id}.json`), 'utf8'));
  const presses = {};
  for (const [config, e] of Object.entries(g.presses)) {
    if (e.kind !== 'decoding' || e.skipped) continue;
    const first = e.compression_events[0]?.cache_len_before;
    presses[config] = {
      cache_len_trace: e.cache_len_trace,
      compression_events: e.compression_events.map((ev, i) => {
        const { scores, ...rest } = ev;
        return ev.slot_positions === null && i < g.model.num_hidden_layers && ev.cache_len_before === first ? { ...rest, scores } : rest;
      }),
      fake_key_positions_not_masked_now: e.layers.map((l) => l.fake_key_positions_not_masked_now ?? null),
    };
  }
  prompts[id] = presses;
}
const json = JSON.stringify({ source: 'NVIDIA kvpress 8bb29b9 (0.5.4) on stories260K, float64 run: decoding traces; see test/golden-decoding.test.ts', prompts });
const gz = gzipSync(json, { level: 9 });
writeFileSync(out, gz);
console.log(`${out}: ${json.length} bytes of JSON, ${gz.length} gzipped`);
