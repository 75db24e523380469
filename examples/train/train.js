#!/usr/bin/env node
// A training run in miniature, for trying FGLab + FGMachine in the first minute:
// fits y = 3x + 2 by gradient descent, prints its progress, and writes into
// $FGLAB_RESULTS_DIR what FGLab shows: notes, scores, charts and a PNG plot.
// Options arrive FGMachine's "double-dash" way: --learning_rate=0.05 --epochs=30 --_id=...
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { deflateSync } from 'node:zlib'

const opts = Object.fromEntries(
  process.argv.slice(2).flatMap((a) => {
    const m = /^--([^=]+)=(.*)$/.exec(a)
    return m ? [[m[1], m[2]]] : []
  }),
)
const lr = Number(opts.learning_rate ?? 0.05)
const epochs = Math.max(1, Math.min(1000, Number(opts.epochs ?? 30)))
const optimizer = opts.optimizer ?? 'sgd'
const epochMs = Number(opts.epoch_ms ?? 200)
let seed = Number(opts.seed ?? 1) >>> 0 || 1
const out = process.env.FGLAB_RESULTS_DIR ?? path.join('results', opts._id ?? 'local')

// A small deterministic random source, so that a seed gives the same run.
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32)
const data = Array.from({ length: 256 }, () => {
  const x = random() * 4 - 2
  return { x, y: 3 * x + 2 + (random() - 0.5) * 0.5 }
})
const train = data.slice(0, 200)
const val = data.slice(200)
const mse = (w, b, set) => set.reduce((s, p) => s + (w * p.x + b - p.y) ** 2, 0) / set.length

const write = (name, value) => writeFileSync(path.join(out, name), typeof value === 'string' ? value : JSON.stringify(value, null, 2))
write('notes.json', { _notes: `training: ${optimizer}, lr ${lr}, ${epochs} epochs` })

let w = 0
let b = 0
let m = [0, 0]
let v = [0, 0]
const trainLoss = []
const valLoss = []
for (let epoch = 1; epoch <= epochs; epoch++) {
  let gw = 0
  let gb = 0
  for (const p of train) {
    const err = w * p.x + b - p.y
    gw += (2 * err * p.x) / train.length
    gb += (2 * err) / train.length
  }
  if (optimizer === 'adam') {
    m = [0.9 * m[0] + 0.1 * gw, 0.9 * m[1] + 0.1 * gb]
    v = [0.999 * v[0] + 0.001 * gw * gw, 0.999 * v[1] + 0.001 * gb * gb]
    const c1 = 1 - 0.9 ** epoch
    const c2 = 1 - 0.999 ** epoch
    w -= (lr * (m[0] / c1)) / (Math.sqrt(v[0] / c2) + 1e-8)
    b -= (lr * (m[1] / c1)) / (Math.sqrt(v[1] / c2) + 1e-8)
  } else {
    w -= lr * gw
    b -= lr * gb
  }
  trainLoss.push(mse(w, b, train))
  valLoss.push(mse(w, b, val))
  console.log(`epoch ${epoch}/${epochs}  train loss ${trainLoss.at(-1).toFixed(4)}  val loss ${valLoss.at(-1).toFixed(4)}`)
  if (!Number.isFinite(trainLoss.at(-1))) {
    console.error('loss diverged: try a smaller learning_rate')
    write('notes.json', { _notes: `diverged at epoch ${epoch} (lr ${lr})` })
    process.exit(1)
  }
  await new Promise((r) => setTimeout(r, epochMs))
}

const best = valLoss.indexOf(Math.min(...valLoss)) + 1
write('scores.json', { _scores: { val_loss: valLoss.at(-1), train_loss: trainLoss.at(-1), w, b } })
write('charts.json', {
  _charts: {
    columnNames: ['train', 'val', 'epoch'],
    data: { x: 'epoch', columns: [trainLoss, valLoss, trainLoss.map((_, i) => i + 1)] },
    axis: { x: { label: { text: 'Epoch' } }, y: { label: { text: 'MSE' } } },
  },
})
writeFileSync(path.join(out, 'loss.png'), plot([trainLoss, valLoss], [[31, 119, 180], [255, 127, 14]]))
write('notes.json', { _notes: `${optimizer}, lr ${lr}: best val loss at epoch ${best}; fit y = ${w.toFixed(3)}x + ${b.toFixed(3)}` })
console.log(`done: y = ${w.toFixed(3)}x + ${b.toFixed(3)}`)

/** A 400×240 line plot of the series (log scale), as a PNG, with nothing but zlib. */
function plot(series, colors, width = 400, height = 240) {
  const px = Buffer.alloc(width * height * 3, 255)
  const all = series.flat().filter((y) => y > 0)
  const lo = Math.log10(Math.min(...all))
  const hi = Math.log10(Math.max(...all)) + 1e-9
  const put = (x, y, c) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return
    px.set(c, (y * width + x) * 3)
  }
  for (let x = 20; x < width - 10; x++) put(x, height - 20, [0, 0, 0])
  for (let y = 10; y < height - 20; y++) put(20, y, [0, 0, 0])
  series.forEach((ys, s) => {
    const point = (i) => [
      20 + Math.round(((width - 30) * i) / Math.max(1, ys.length - 1)),
      height - 20 - Math.round(((height - 30) * (Math.log10(Math.max(ys[i], 1e-12)) - lo)) / (hi - lo)),
    ]
    for (let i = 1; i < ys.length; i++) {
      const [x0, y0] = point(i - 1)
      const [x1, y1] = point(i)
      const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1)
      for (let k = 0; k <= steps; k++) {
        const x = Math.round(x0 + ((x1 - x0) * k) / steps)
        const y = Math.round(y0 + ((y1 - y0) * k) / steps)
        put(x, y, colors[s])
        put(x, y + 1, colors[s])
      }
    }
  })
  const raw = Buffer.alloc((width * 3 + 1) * height)
  for (let y = 0; y < height; y++) px.copy(raw, y * (width * 3 + 1) + 1, y * width * 3, (y + 1) * width * 3)
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    return c >>> 0
  })
  const crc = (buf) => {
    let c = 0xffffffff
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8)
    return (c ^ 0xffffffff) >>> 0
  }
  const chunk = (type, body) => {
    const len = Buffer.alloc(4)
    len.writeUInt32BE(body.length)
    const tb = Buffer.concat([Buffer.from(type), body])
    const c = Buffer.alloc(4)
    c.writeUInt32BE(crc(tb))
    return Buffer.concat([len, tb, c])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ])
}
