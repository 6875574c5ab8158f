// The reference host's side of PERF.md's engine table, measured the same way as benches/engine.rs:
// warm handle() for an aos Eval (aos1, aos2, wasm64, sqlite), the happy process, instantiate, and
// instantiate + restore of a booted image. Prints one JSON line per figure (median of N runs, ms).
// Usage: NODE_PATH=<dir with @permaweb/ao-loader@0.0.49> node --experimental-wasm-memory64 \
//          engine-ref.cjs <shared dir> [iterations]
// The glue replaces Date.now, performance.now and process.hrtime with its counter clock when an
// instance is created: keep the real timer from before that.
const hrtimeBigint = process.hrtime.bigint
const fs = require('fs')
const path = require('path')
const AoLoader = require('@permaweb/ao-loader')

const shared = process.argv[2]
const N = +(process.argv[3] || 20)
const golden = (name) => fs.readFileSync(path.join(shared, 'goldens/out', name + '.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
const mod = (f) => fs.readFileSync(path.join(shared, 'fixtures/modules', f))
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const now = () => Number(hrtimeBigint()) / 1e6

async function time (label, n, fn) {
  const xs = []
  for (let i = 0; i < n; i++) { const t = now(); await fn(); xs.push(now() - t) }
  console.log(JSON.stringify({ label, median_ms: +median(xs).toFixed(3), runs: n }))
}

async function warm (label, file, format, name, code) {
  const steps = golden(name)
  const opts = { format, memoryLimit: 4 * 1024 ** 3, computeLimit: 9e12 }
  const h = await AoLoader(mod(file), opts)
  let memory = (await h(null, steps[0].msg, steps[0].env)).Memory
  const msg = { ...steps[1].msg, ...(code ? { Data: code } : {}) }
  await time(label + ' warm handle', N, async () => { memory = (await h(memory, msg, steps[1].env)).Memory })
  return memory
}

async function main () {
  const aos1Image = await warm('aos1 Eval', 'aos1-emscripten2.wasm', 'wasm32-unknown-emscripten2', 'aos1-basics', '1 + 1')
  const aos2Image = await warm('aos2 Eval', 'aos2-emscripten4.wasm', 'wasm32-unknown-emscripten4', 'aos2-basics', '1 + 1')
  await warm('sqlite Eval', 'sqlite-emscripten2.wasm', 'wasm32-unknown-emscripten2', 'sqlite', 'return 1')
  await warm('wasm64 Eval', 'lua-wasm64.wasm', 'wasm64-unknown-emscripten-draft_2024_02_15', 'wasm64-basics', '1 + 1')
  const happy = golden('happy')
  const hh = await AoLoader(mod('happy-emscripten1.wasm'), { format: 'wasm32-unknown-emscripten', computeLimit: 9e12 })
  let hm = null
  await time('happy (format 1) warm handle', N, async () => { hm = (await hh(hm, happy[0].msg, happy[0].env)).Memory })
  const o1 = { format: 'wasm32-unknown-emscripten2', memoryLimit: 1024 ** 3, computeLimit: 9e12 }
  const o2 = { format: 'wasm32-unknown-emscripten4', memoryLimit: 1024 ** 3, computeLimit: 9e12 }
  const a1 = golden('aos1-basics')
  const a2 = golden('aos2-basics')
  await time('aos1 instantiate + start-up', Math.min(N, 10), () => AoLoader(mod('aos1-emscripten2.wasm'), o1))
  // Restore = a new instance whose first call carries the image (the reference has no other way);
  // measured as instantiate + one Eval on the image, minus nothing: it is what a cold CU pays.
  await time('aos1 instantiate + restore + Eval', Math.min(N, 10), async () => {
    const h = await AoLoader(mod('aos1-emscripten2.wasm'), o1); await h(aos1Image, { ...a1[1].msg, Data: '1 + 1' }, a1[1].env)
  })
  await time('aos2 instantiate + restore + Eval', Math.min(N, 10), async () => {
    const h = await AoLoader(mod('aos2-emscripten4.wasm'), o2); await h(aos2Image, { ...a2[1].msg, Data: '1 + 1' }, a2[1].env)
  })
}
main().catch((e) => { console.error(e); process.exit(1) })
