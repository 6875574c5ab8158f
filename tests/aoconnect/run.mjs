// Drives a CU with the real @permaweb/aoconnect (legacy mode), for tests/aoconnect.rs.
//
//   node run.mjs <CU_URL> <PROCESS_ID> <CALLS_JSON>
//
// CALLS_JSON is an array of calls, run in order, each one of
//   {"call":"result",  "message":"<id>"}
//   {"call":"results", "sort"?:"ASC"|"DESC", "limit"?:N, "from"?:"<cursor>", "to"?:"<cursor>"}
//   {"call":"dryrun",  "data"?:"...", "tags"?:[{name,value}], "Owner"?:"...", "Id"?:"...", "anchor"?:"..."}
// The process id is added to every call. Prints one JSON document on stdout:
//   {"aoconnect":"<version>","calls":[{"call":…,"ok":<what aoconnect returned>} | {"call":…,"error":"<message>"}]}
// and exits 0 when every call was made (a call that threw is reported, not fatal).

import { readFileSync } from 'node:fs'
import { connect } from '@permaweb/aoconnect'

const [cuUrl, processId, callsJson] = process.argv.slice(2)
if (!cuUrl || !processId || !callsJson) {
  console.error('usage: node run.mjs <CU_URL> <PROCESS_ID> <CALLS_JSON>')
  process.exit(2)
}
const calls = JSON.parse(callsJson)

const version = JSON.parse(
  readFileSync(new URL('./node_modules/@permaweb/aoconnect/package.json', import.meta.url), 'utf8')
).version

// Legacy mode talks to a CU (and an MU, a gateway) over HTTP. Only the CU is used here; the
// others point at the CU too so that nothing can leave the machine.
const ao = connect({ MODE: 'legacy', CU_URL: cuUrl, MU_URL: cuUrl, GATEWAY_URL: cuUrl, noLog: true })

const out = []
for (const c of calls) {
  const { call, ...args } = c
  try {
    let ok
    if (call === 'result') {
      ok = await ao.result({ process: processId, message: args.message })
    } else if (call === 'results') {
      ok = await ao.results({ process: processId, ...args })
    } else if (call === 'dryrun') {
      ok = await ao.dryrun({ process: processId, ...args })
    } else {
      throw new Error(`unknown call ${call}`)
    }
    out.push({ call, ok })
  } catch (e) {
    out.push({ call, error: String(e && e.stack ? e.stack : e) })
  }
}
process.stdout.write(JSON.stringify({ aoconnect: version, calls: out }) + '\n')
