// The ringtrain dashboard: one status socket, the charts (uPlot) and the tables. No build step, no
// framework: the coordinator serves this file as is. Schema of the events: docs/status.md.
/* global uPlot */
'use strict';

const token = new URLSearchParams(location.search).get('token');
const $ = (id) => document.getElementById(id);

const run = { history: [], evaluations: [], ranks: [], checkpoints: [], warnings: [], generations: [], metrics: null, spread: null, state: 'gathering', config: null, access: 'read' };

// ---- charts ----

/** A dashed line at every membership change after the start (a fault red, a join or leave grey). */
function markGenerations(u) {
  const { ctx, bbox } = u;
  ctx.save();
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = 1;
  let drawn = 0;
  for (const g of run.generations) {
    if (g.cause === 'start') continue;
    const x = u.valToPos(g.step, 'x', true);
    if (!Number.isFinite(x) || x < bbox.left || x > bbox.left + bbox.width) continue;
    drawn++;
    ctx.strokeStyle = g.cause === 'fault' ? '#c0392b' : '#888';
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
  }
  ctx.restore();
  // For tests and scripts: how many changes this chart marks now.
  if (u.root.parentElement) u.root.parentElement.dataset.marks = String(drawn);
}

function makeChart(id, series, opts = {}) {
  const el = $(id);
  const chart = new uPlot(
    {
      width: el.clientWidth || 440,
      height: 220,
      scales: { x: { time: false }, ...(opts.scales || {}) },
      axes: [{ label: 'step' }, { size: 60, ...(opts.yAxis || {}) }],
      series: [{ label: 'step' }, ...series.map((s) => ({ spanGaps: true, width: 2, points: { show: s.points || false }, ...s }))],
      legend: { live: false },
      hooks: { draw: [markGenerations] },
    },
    [[], ...series.map(() => [])],
    el,
  );
  return { el, chart };
}

const charts = {
  loss: makeChart('chart-loss', [
    { label: 'training', stroke: '#2f5bea' },
    { label: 'test', stroke: '#c62828', points: true },
  ]),
  accuracy: makeChart('chart-accuracy', [{ label: 'test accuracy %', stroke: '#1f8a4c', points: true }]),
  rate: makeChart('chart-rate', [{ label: 'samples/s', stroke: '#6a3de8' }]),
  time: makeChart('chart-time', [
    { label: 'compute', stroke: '#2f5bea' },
    { label: 'all-reduce', stroke: '#e07b00' },
  ]),
};

/** A language model predicts every position of a sample: its figures are per token. */
const isLanguageModel = () => (run.config?.positions ?? 1) > 1;

/**
 * A language model is read by its validation loss in bits per character, and its speed in tokens:
 * those two charts are made again, with their captions, once the config says so.
 */
let chartsFitLanguageModel = false;
function fitChartsToTask() {
  if (!isLanguageModel() || chartsFitLanguageModel) return;
  chartsFitLanguageModel = true;
  for (const [key, id, caption, series] of [
    ['accuracy', 'chart-accuracy', 'Validation bits per character', { label: 'bits/char', stroke: '#1f8a4c', points: true }],
    ['rate', 'chart-rate', 'Tokens/s (all ranks)', { label: 'tokens/s', stroke: '#6a3de8' }],
  ]) {
    $(id).replaceChildren();
    $(`caption-${key}`).textContent = caption;
    charts[key] = makeChart(id, [series]);
  }
  $('caption-loss').textContent = 'Loss per token (training, validation)';
}

// One line per rank: made when the world size is known, remade if it changes.
const RANK_COLOURS = ['#2f5bea', '#e07b00', '#1f8a4c', '#c62828', '#6a3de8', '#00838f', '#ad1457', '#5d4037'];
let rankChart = null;

function drawRankChart() {
  const h = run.history.filter((p) => p.rankComputeMs && p.rankComputeMs.length);
  const n = h.length ? h[h.length - 1].rankComputeMs.length : 0;
  if (!n) return;
  if (!rankChart || rankChart.n !== n) {
    const el = $('chart-ranks');
    el.replaceChildren();
    const series = Array.from({ length: n }, (_, r) => ({ label: `rank ${r}`, stroke: RANK_COLOURS[r % RANK_COLOURS.length] }));
    rankChart = { ...makeChart('chart-ranks', series), n };
    el.dataset.series = String(n);
  }
  const cols = [h.map((p) => p.step)];
  for (let r = 0; r < n; r++) cols.push(h.map((p) => (p.rankComputeMs.length === n ? p.rankComputeMs[r] : null)));
  setData(rankChart, cols);
}

function setData(c, data) {
  c.chart.setData(data);
  c.el.dataset.points = String(data[0].length);
}

/** Training points and evaluation points on one x axis (uPlot wants aligned columns). */
function lossColumns() {
  const byStep = new Map();
  for (const p of run.history) byStep.set(p.step, [p.loss, null]);
  for (const e of run.evaluations) byStep.set(e.step, [byStep.get(e.step)?.[0] ?? null, e.testLoss]);
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return [steps, steps.map((s) => byStep.get(s)[0]), steps.map((s) => byStep.get(s)[1])];
}

function drawCharts() {
  const h = run.history;
  setData(charts.loss, lossColumns());
  fitChartsToTask();
  const lm = isLanguageModel();
  setData(charts.accuracy, [run.evaluations.map((e) => e.step), run.evaluations.map((e) => (lm ? (e.bitsPerChar ?? e.testLoss / Math.LN2) : 100 * e.testAccuracy))]);
  setData(charts.rate, [h.map((p) => p.step), h.map((p) => p.samplesPerSecond * (run.config?.positions ?? 1))]);
  setData(charts.time, [h.map((p) => p.step), h.map((p) => p.phases.dataMs + p.phases.computeMs), h.map((p) => p.phases.allreduceMs)]);
  drawRankChart();
}

window.addEventListener('resize', () => {
  for (const c of [...Object.values(charts), ...(rankChart ? [rankChart] : [])]) c.chart.setSize({ width: c.el.clientWidth, height: 220 });
});

// ---- tables and facts ----

const fmt = {
  ms: (x) => (x == null ? '–' : `${x.toFixed(2)} ms`),
  num: (x, d = 4) => (x == null ? '–' : Number(x).toFixed(d)),
  sci: (x) => (x == null ? 'NaN/Inf' : Number(x).toExponential(2)),
  int: (x) => (x == null ? '–' : Math.round(x).toLocaleString('en')),
  bytes: (x) => (x >= 1e9 ? `${(x / 1e9).toFixed(2)} GB/s` : `${(x / 1e6).toFixed(1)} MB/s`),
  eta: (s) => (s == null ? '–' : s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`),
};

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) {
    const badge = document.createElement('span');
    badge.className = `badge ${cls}`;
    badge.textContent = text;
    td.textContent = '';
    td.append(badge);
  }
}

function fillTable(id, rows, render) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const r of rows) render(body.insertRow(), r);
}

function drawRanks() {
  fillTable('ranks', run.ranks, (tr, r) => {
    tr.className = r.state;
    cell(tr, r.rank < 0 ? '–' : String(r.rank));
    cell(tr, r.workerId);
    cell(tr, r.state, r.state);
    cell(tr, fmt.int(r.step));
    cell(tr, fmt.ms(r.phases?.dataMs));
    cell(tr, fmt.ms(r.phases?.computeMs));
    cell(tr, fmt.ms(r.phases?.allreduceMs));
    cell(tr, fmt.ms(r.phases?.optimizerMs));
  });
}

function drawCheckpoints() {
  fillTable('checkpoints', [...run.checkpoints].reverse(), (tr, c) => {
    cell(tr, fmt.int(c.step));
    cell(tr, c.path.split('/').pop());
    cell(tr, fmt.ms(c.stallMs));
    cell(tr, fmt.ms(c.writeMs));
  });
}

function drawWarnings() {
  const ul = $('warnings');
  ul.replaceChildren(
    ...[...run.warnings].reverse().map((w) => {
      const li = document.createElement('li');
      li.textContent = `${w.code}: ${w.message}`;
      return li;
    }),
  );
}

function drawHealth(h) {
  if (!h) return;
  $('health-step').textContent = `(step ${h.step})`;
  fillTable('health', h.tensors, (tr, t) => {
    cell(tr, t.name);
    cell(tr, fmt.sci(t.weightNorm));
    cell(tr, fmt.sci(t.gradNorm));
    cell(tr, fmt.sci(t.updateRatio));
  });
}

function drawSummary() {
  const badge = $('state');
  badge.textContent = run.state;
  badge.className = `badge ${run.state}`;
  const m = run.metrics;
  const total = m?.totalSteps || 0;
  const step = m?.step || 0;
  const pct = total ? (100 * step) / total : 0;
  $('progress-bar').style.width = `${pct.toFixed(1)}%`;
  $('progress-text').textContent = total ? `step ${step.toLocaleString('en')} / ${total.toLocaleString('en')} (${pct.toFixed(1)}%) · ETA ${fmt.eta(m.etaSeconds)}` : run.state;
  const c = run.config;
  const lastEval = run.evaluations.at(-1);
  const facts = [
    ['model', c ? `${c.model}, ${fmt.int(c.parameters)} parameters` : '–'],
    ['data', c?.dataset ?? '–'],
    ['optimizer', c ? `${c.optimizer}, lr ${m ? m.lr : c.lr}, ${c.globalBatch ? `global batch ${c.globalBatch}` : `batch ${c.batchSize}/rank`}${c.deterministic ? ', deterministic' : ''}` : '–'],
    ['workers', String(run.ranks.length)],
    ['epoch', m ? `${m.epoch + 1}/${c?.epochs ?? '?'}` : '–'],
    ['loss', fmt.num(m?.loss)],
    ...(isLanguageModel()
      ? [
          ['val loss', lastEval ? `${lastEval.testLoss.toFixed(4)} at step ${lastEval.step}` : '–'],
          ['bits/char', lastEval ? (lastEval.bitsPerChar ?? lastEval.testLoss / Math.LN2).toFixed(3) : '–'],
          ['perplexity', lastEval ? Math.exp(lastEval.testLoss).toFixed(2) : '–'],
          ['tokens/s', fmt.int(m ? m.samplesPerSecond * c.positions : undefined)],
        ]
      : [
          ['test accuracy', lastEval ? `${(100 * lastEval.testAccuracy).toFixed(2)}%` : '–'],
          ['samples/s', fmt.int(m?.samplesPerSecond)],
        ]),
    ['all-reduce busbw', m ? fmt.bytes(m.allreduceBusbw) : '–'],
    ['compute min/median/max', run.spread ? `${fmt.ms(run.spread.min)} / ${fmt.ms(run.spread.median)} / ${fmt.ms(run.spread.max)}` : '–'],
  ];
  $('facts').replaceChildren(
    ...facts.map(([k, v]) => {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = k;
      dd.textContent = v;
      dd.dataset.fact = k;
      div.append(dt, dd);
      return div;
    }),
  );
  $('admin').hidden = run.access !== 'admin' || ['finished', 'failed', 'stopped'].includes(run.state);
}

function drawGenerations() {
  $('generations').replaceChildren(
    ...[...run.generations]
      .filter((g) => g.cause !== 'start')
      .reverse()
      .map((g) => {
        const li = document.createElement('li');
        const why = g.fault ? `: ${g.fault.message}${g.fault.exit ? ` (${g.fault.exit})` : ''}` : '';
        li.textContent = `generation ${g.generation} at step ${g.step}: ${g.cause}${why}; ${g.worldSize} workers, training again after ${g.recoveryMs} ms`;
        return li;
      }),
  );
}

function drawAll() {
  drawGenerations();
  drawSummary();
  drawCharts();
  drawRanks();
  drawCheckpoints();
  drawWarnings();
}

// ---- the status socket ----

function upsertRank(info) {
  const i = run.ranks.findIndex((r) => r.workerId === info.workerId);
  if (i >= 0) run.ranks[i] = info;
  else run.ranks.push(info);
  run.ranks.sort((a, b) => a.rank - b.rank);
}

const handlers = {
  snapshot(e) {
    Object.assign(run, { history: e.history, evaluations: e.evaluations, ranks: e.ranks, checkpoints: e.checkpoints, warnings: e.warnings, generations: e.generations, metrics: e.metrics, state: e.state, config: e.config, access: e.access });
    drawAll();
    drawHealth(e.health);
  },
  state(e) {
    run.state = e.state;
    drawSummary();
  },
  rank(e) {
    upsertRank(e.rank);
    drawRanks();
    drawSummary();
  },
  metrics(e) {
    run.metrics = e.metrics;
    run.spread = e.computeSpread;
    run.history.push(e.metrics);
    run.ranks = e.ranks;
    drawSummary();
    drawCharts();
    drawRanks();
  },
  generation(e) {
    run.generations.push(e.change);
    drawGenerations();
    drawCharts();
  },
  evaluation(e) {
    run.evaluations.push(e.evaluation);
    drawCharts();
    drawSummary();
  },
  checkpoint(e) {
    if (e.ok) run.checkpoints.push(e.checkpoint);
    drawCheckpoints();
  },
  health(e) {
    drawHealth(e.health);
  },
  warning(e) {
    run.warnings.push(e.warning);
    drawWarnings();
  },
  end(e) {
    run.state = e.state;
    drawSummary();
    $('connection').textContent = e.error ? `run ended: ${e.error.code}: ${e.error.message}` : `run ended after ${e.steps} steps in ${e.seconds.toFixed(1)} s`;
  },
  commandResult(e) {
    $('connection').textContent = e.ok ? e.message : `${e.code}: ${e.message}`;
  },
};

let socket = null;
let nextCommand = 1;

function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/status${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  socket = new WebSocket(url);
  socket.onopen = () => ($('connection').textContent = 'live');
  socket.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    handlers[e.type]?.(e);
  };
  socket.onclose = (ev) => {
    if (ev.code === 1000) {
      if (!$('connection').textContent.startsWith('run ended')) $('connection').textContent = 'run ended';
      return;
    }
    $('connection').textContent = ev.code === 1006 && run.state === 'gathering' ? 'cannot connect (wrong token?), retrying…' : 'disconnected, retrying…';
    setTimeout(connect, 2000);
  };
}

function command(action) {
  socket?.send(JSON.stringify({ type: 'command', id: nextCommand++, action }));
}

$('checkpoint-now').addEventListener('click', () => command('checkpoint'));
$('stop-run').addEventListener('click', () => {
  if (confirm('Stop the run on every worker?')) command('stop');
});

drawAll();
connect();
