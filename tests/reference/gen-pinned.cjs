// Regenerates tests/goldens-pinned/: goldens of the reference host (@permaweb/ao-loader 0.0.49)
// for the formats whose glue leaks the host into the module (wasm32-unknown-emscripten and
// -emscripten2), with those leaks pinned to the values metalcu uses:
//   - process.argv[1] (the glue's program name: argv[0] and the `_` environment variable) = "thisProgram";
//   - the random source behind /dev/urandom = metalcu's stream: byte i of a call is byte i % 32 of
//     sha256("metalcu/urandom/v1\0" + msg.Id + "\0" + le64(floor(i / 32))), restarting each call
//     (seed "" during start-up).
//   - the command-line arguments the format 2 glue passes to main() (process.argv.slice(2)) = none.
// Each config runs in a fresh Node process (the glue keeps process-wide state), which gets its
// parameters from the environment so that its own argv stays empty.
// Usage: node gen-pinned.cjs <shared>/goldens/gen/configs.cjs <shared>/fixtures/modules <out dir>
// with @permaweb/ao-loader@0.0.49 resolvable (NODE_PATH). tests/reference/README.md has the steps.
const fs = require('fs')
const path = require('path')
const crypto = require('crypto')
const { execFileSync } = require('child_process')

const [configsPath, fixtures, outDir] = process.env.PINNED_CHILD ? JSON.parse(process.env.PINNED_CHILD) : process.argv.slice(2)
const only = process.env.PINNED_ONLY
const configs = require(path.resolve(configsPath))
const PINNED = ['wasm32-unknown-emscripten', 'wasm32-unknown-emscripten2']

if (!only) {
  fs.mkdirSync(outDir, { recursive: true })
  for (const cfg of configs.filter((c) => PINNED.includes(c.format))) {
    const env = { ...process.env, PINNED_CHILD: JSON.stringify([configsPath, fixtures, outDir]), PINNED_ONLY: cfg.name }
    execFileSync(process.execPath, [__filename], { stdio: 'inherit', env })
  }
  process.exit(0)
}

process.argv = [process.argv[0], 'thisProgram']
let seed = ''
let pos = 0
function fill (view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
  for (let i = 0; i < bytes.length; i++, pos++) {
    const idx = Buffer.alloc(8)
    idx.writeBigUInt64LE(BigInt(Math.floor(pos / 32)))
    const block = crypto.createHash('sha256').update(Buffer.concat([Buffer.from('metalcu/urandom/v1\0'), Buffer.from(seed), Buffer.from('\0'), idx])).digest()
    bytes[i] = block[pos % 32]
  }
  return view
}
globalThis.crypto.getRandomValues = fill
crypto.randomFillSync = fill
crypto.randomBytes = (n) => fill(Buffer.alloc(n))

const AoLoader = require('@permaweb/ao-loader')
const sha256 = (buf) => crypto.createHash('sha256').update(Buffer.from(buf)).digest('hex')

async function main () {
  const cfg = configs.find((c) => c.name === only)
  const binary = fs.readFileSync(path.join(fixtures, cfg.module))
  const options = { format: cfg.format, ...(cfg.options || {}) }
  const fresh = async () => { await AoLoader(binary, options); seed = ''; pos = 0; return AoLoader(binary, options) }
  let handle = await fresh()
  let memory = null
  const lines = []
  for (let i = 0; i < cfg.steps.length; i++) {
    const { msg, env } = cfg.steps[i]
    const line = { step: i, msg, env }
    let failed = false
    seed = msg.Id
    pos = 0
    try {
      const res = await handle(memory, msg, env)
      const { Memory, ...rest } = res
      line.result = rest
      if (rest.Error !== undefined && rest.Error !== null && rest.Error !== '') failed = true
      else memory = Memory
    } catch (e) {
      line.thrown = String((e && e.message) || e)
      failed = true
    }
    if (failed) handle = await fresh()
    if (memory) { line.memory_len = memory.byteLength; line.memory_sha256 = sha256(memory) } else { line.memory_len = 0; line.memory_sha256 = null }
    lines.push(JSON.stringify(line))
  }
  fs.writeFileSync(path.join(outDir, cfg.name + '.jsonl'), lines.join('\n') + '\n')
  console.error(`${cfg.name}: ${lines.length} steps`)
}
main().catch((e) => { console.error(e); process.exit(1) })
