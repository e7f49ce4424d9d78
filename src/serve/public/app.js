// The page behind `kvpress serve` at /: calls POST /v1/kvpress/scores (the data of
// `kvpress scores --json`) and draws what each press keeps. Plain browser JavaScript, no build.

const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const CELL = 14;
const PER_ROW = 40;

/** Colour of t in [0, 1] on a viridis-like ramp. */
export function ramp(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  return RAMP[i].map((a, k) => Math.round(a + f * (RAMP[i + 1][k] - a)));
}

// With `kvpress serve --api-key K`, open the page as /#key=K: the key stays in the browser.
const KEY = new URLSearchParams(location.hash.slice(1)).get('key');
const auth = KEY ? { authorization: `Bearer ${KEY}` } : {};

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const kib = (b) => (b >= 1024 * 1024 ? `${(b / 1024 / 1024).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

async function loadPresses() {
  const r = await fetch('/v1/kvpress/presses', { headers: auth });
  if (!r.ok) throw new Error((await r.json()).error?.message ?? `HTTP ${r.status}`);
  const { data } = await r.json();
  for (const id of ['configA', 'configB']) {
    const select = $(`#${id} .press`);
    for (const p of data) select.append(el('option', { value: p.name, title: p.description }, p.name));
  }
  $('#configA .press').value = data.some((p) => p.name === 'expected_attention') ? 'expected_attention' : data[0].name;
  $('#configB .press').value = data.some((p) => p.name === 'knorm') ? 'knorm' : data[0].name;
}

function requestOf(id) {
  const box = $(`#${id}`);
  const raw = $('.options', box).value.trim();
  let options;
  if (raw !== '') {
    try {
      options = JSON.parse(raw);
    } catch {
      throw new Error(`${id === 'configA' ? 'press A' : 'press B'}: options must be a JSON object, e.g. {"windowSize": 8}`);
    }
  }
  return { text: $('#text').value, press: $('.press', box).value, compression_ratio: Number($('.ratio', box).value), ...(options ? { options } : {}) };
}

async function scores(body) {
  const r = await fetch('/v1/kvpress/scores', { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(body) });
  const j = await r.json();
  if (!r.ok) throw new Error(j.error?.message ?? `HTTP ${r.status}`);
  return j;
}

/** Kept counts: per position, how many (layer, head) pairs kept it. */
function keptCounts(data) {
  const counts = new Array(data.tokens.length).fill(0);
  for (const l of data.layers) for (const head of l.kept) for (const t of head) counts[t]++;
  return counts;
}

function render(panel, data) {
  panel.hidden = false;
  panel.replaceChildren();
  const pairs = data.numLayers * data.numKvHeads;
  panel.append(el('h2', {}, `${data.press} · ratio ${data.compression_ratio}`));
  const pct = data.bytes.before > 0 ? (100 * data.bytes.evicted) / data.bytes.before : 0;
  panel.append(el('p', { class: 'bytes' }, `${data.tokens.length} tokens · KV kept ${kib(data.bytes.kept)}, evicted ${kib(data.bytes.evicted)} of ${kib(data.bytes.before)} (${pct.toFixed(1)} % removed)`));

  const counts = keptCounts(data);
  const tokens = el('div', { class: 'tokens' });
  data.pieces.forEach((piece, t) => {
    const f = counts[t] / pairs;
    const s = el('span', { title: `position ${t}: kept by ${counts[t]} of ${pairs} (layer, head) pairs`, 'data-pos': String(t) }, piece === '' ? '·' : piece);
    s.style.background = `rgba(34, 139, 34, ${(0.08 + 0.8 * f).toFixed(3)})`;
    tokens.append(s);
  });
  panel.append(el('div', { class: 'legend' }, 'Token background: the darker, the more (layer, KV head) pairs kept it.'), tokens);

  const grid = el('table', { class: 'grid' });
  const head = el('tr');
  head.append(el('th', {}, 'layer \\ head'));
  for (let h = 0; h < data.numKvHeads; h++) head.append(el('th', {}, String(h)));
  grid.append(head);
  const heat = el('canvas', { class: 'heatmap' });
  const caption = el('div', { class: 'legend caption' });
  const select = (layer, h, cell) => {
    grid.querySelectorAll('td.selected').forEach((c) => c.classList.remove('selected'));
    cell.classList.add('selected');
    drawHeat(heat, caption, tokens, data, layer, h);
  };
  let firstCell = null;
  data.layers.forEach((l, layer) => {
    const row = el('tr');
    row.append(el('th', {}, String(layer)));
    l.kept.forEach((k, h) => {
      const f = k.length / data.tokens.length;
      const cell = el('td', { title: `layer ${layer}, head ${h}: kept ${k.length} of ${data.tokens.length}`, 'data-layer': String(layer), 'data-head': String(h) }, String(k.length));
      const [r, g, b] = ramp(f);
      cell.style.background = `rgb(${r}, ${g}, ${b})`;
      cell.style.color = f > 0.6 ? '#000' : '#fff';
      cell.addEventListener('click', () => select(layer, h, cell));
      firstCell ??= cell;
      row.append(cell);
    });
    grid.append(row);
  });
  panel.append(el('div', { class: 'legend' }, 'Layer × KV head: entries kept (click one to see its scores).'), grid, caption, heat);
  select(0, 0, firstCell);
}

/**
 * The selected head's scores, one cell per position, kept ones framed in white. Colours follow
 * each score's rank within the head (equal scores share a colour): a few extreme scores, such as
 * a window's, would otherwise flatten every other cell to one end of the ramp.
 */
function drawHeat(canvas, caption, tokens, data, layer, h) {
  const T = data.tokens.length;
  const kept = new Set(data.layers[layer].kept[h]);
  tokens.querySelectorAll('span').forEach((s) => s.classList.toggle('sel-kept', kept.has(Number(s.dataset.pos))));
  const scores = data.layers[layer].scores?.[h] ?? null;
  const cols = Math.min(PER_ROW, T), rows = Math.ceil(T / cols);
  canvas.width = cols * CELL;
  canvas.height = rows * CELL;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  let lo = Infinity, hi = -Infinity;
  const rank = new Map();
  if (scores) {
    const distinct = [...new Set(scores.filter(Number.isFinite))].sort((a, b) => a - b);
    distinct.forEach((v, i) => rank.set(v, distinct.length > 1 ? i / (distinct.length - 1) : 1));
    lo = distinct[0];
    hi = distinct[distinct.length - 1];
  }
  for (let t = 0; t < T; t++) {
    const x = (t % cols) * CELL, y = Math.floor(t / cols) * CELL;
    let color;
    if (scores && Number.isFinite(scores[t])) {
      color = ramp(rank.get(scores[t]));
    } else {
      color = kept.has(t) ? [120, 120, 120] : [220, 220, 220];
    }
    ctx.fillStyle = `rgb(${color.join(',')})`;
    ctx.fillRect(x, y, CELL, CELL);
    if (kept.has(t)) {
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, CELL - 2, CELL - 2);
    }
  }
  caption.textContent = scores
    ? `Layer ${layer}, head ${h}: ${data.logScores ? 'log-' : ''}scores from ${lo.toPrecision(3)} (dark) to ${hi.toPrecision(3)} (yellow), coloured by rank, ${PER_ROW} positions per row; framed cells are kept (${kept.size} of ${T}).`
    : `Layer ${layer}, head ${h}: ${data.press} does not score positions; dark cells are kept (${kept.size} of ${T}).`;
  canvas.dataset.ready = '1';
}

async function run(event) {
  event.preventDefault();
  const status = $('#status');
  status.textContent = 'running…';
  try {
    const compare = $('#compare').checked;
    const bodies = [requestOf('configA'), ...(compare ? [requestOf('configB')] : [])];
    const results = [];
    for (const b of bodies) results.push(await scores(b));
    render($('#panelA'), results[0]);
    if (results[1]) render($('#panelB'), results[1]);
    else $('#panelB').hidden = true;
    status.textContent = '';
  } catch (e) {
    status.textContent = e.message;
  }
}

$('#form').addEventListener('submit', run);
loadPresses().catch((e) => { $('#status').textContent = `cannot list the presses: ${e.message}`; });
