#!/usr/bin/env node
// ONNX Runtime (CPU execution provider, the npm package onnxruntime-node)
// inference timings on the ONNX exports of the benchmark models
// (bench/ref/export_onnx.py).
//
//   node bench/ref/ort_ref.js ONNXDIR --threads N [--only REGEX]
//        [--iters 30] [--warmup 10] [--min-time 1.0]
//
// Install first: `npm install` in bench/ref (./setup.sh bench does it).
// Output: JSON lines in the schema of bench/ref/timing.py, framework
// "onnxruntime" (cpu_median_ms from process.cpuUsage, in microseconds). Times include the Node binding's per-call overhead (tensor
// wrap, async dispatch), comparable to the Python overhead of the others.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}

async function time(sess, feeds, iters, warmup, minTime) {
  for (let i = 0; i < warmup; i++) await sess.run(feeds);
  const t0 = process.hrtime.bigint();
  await sess.run(feeds);
  const est = Math.max(Number(process.hrtime.bigint() - t0) / 1e9, 1e-7);
  const n = Math.max(iters, Math.min(Math.floor(minTime / est), 2000));
  const ts = [], cpu = [];
  for (let i = 0; i < n; i++) {
    const a = process.hrtime.bigint(), c = process.cpuUsage();
    await sess.run(feeds);
    ts.push(Number(process.hrtime.bigint() - a) / 1e9);
    const d = process.cpuUsage(c);
    cpu.push((d.user + d.system) / 1e6);
  }
  const up = (p, q) => p - q;
  return [ts.sort(up), cpu.sort(up)];
}

function median(v) {
  const n = v.length;
  return n % 2 ? v[(n - 1) / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

function row(name, threads, batch, [ts, cpu], flop) {
  const n = ts.length, med = median(ts);
  const r = (v, d) => +v.toFixed(d);
  return {kind: 'result', name, framework: 'onnxruntime', threads, batch, iters: n,
          median_ms: r(med * 1e3, 4), min_ms: r(ts[0] * 1e3, 4), max_ms: r(ts[n - 1] * 1e3, 4),
          throughput: r(batch / med, 2), throughput_unit: 'samples/s',
          gflop_per_iter: r(flop / 1e9, 5), gflops_at_median: r(flop / med / 1e9, 2),
          cpu_median_ms: r(median(cpu) * 1e3, 4)};
}

async function main() {
  const dir = process.argv[2];
  const threads = Number(arg('--threads', '1'));
  const only = process.argv.includes('--only') ? new RegExp(arg('--only')) : null;
  const iters = Number(arg('--iters', '30')), warmup = Number(arg('--warmup', '10'));
  const minTime = Number(arg('--min-time', '1.0'));
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  console.log(JSON.stringify({kind: 'header', framework: 'onnxruntime', versions: ort.env.versions,
                              node: process.version, threads}));
  for (const [name, spec] of Object.entries(manifest)) {
    if (only && !only.test(name + '_infer')) continue;
    const sess = await ort.InferenceSession.create(path.join(dir, name + '.onnx'), {
      intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
      graphOptimizationLevel: 'all', executionProviders: ['cpu']});
    for (const b of spec.batches) {
      const shape = [b, ...spec.input_shape];
      const d = new Float32Array(shape.reduce((p, c) => p * c, 1));
      for (let i = 0; i < d.length; i++) d[i] = Math.random() * 2 - 1;
      const ts = await time(sess, {x: new ort.Tensor('float32', d, shape)}, iters, warmup, minTime);
      const r = row(name + '_infer', threads, b, ts, spec.fwd_flop_per_sample * b);
      console.log(JSON.stringify(r));
      process.stderr.write(`${r.name.padEnd(18)} onnxruntime        thr=${threads} b=${String(b).padEnd(4)} ` +
                           `n=${String(r.iters).padEnd(4)} median ${r.median_ms.toFixed(3).padStart(9)} ms\n`);
    }
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
