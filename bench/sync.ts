/**
 * A no-op `sysext-helper sync` (an approved Flatpak app, unchanged) on a booted
 * host with real flatpak: goal <= 0.3 s. Also times `flatpak update`-driven syncs.
 * Run (root): npm run build && node dist/bench/sync.js [debian12|debian13]
 */
import {type Flavor, GUEST_NODE, REPO_ROOT, bootHost, ensureRoot, fixturePath} from '../test/e2e/lib/hosts.js'

const RUNS = 9
const flavor = (process.argv[2] ?? 'debian13') as Flavor
await ensureRoot(flavor)
const host = await bootHost(flavor)
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]
try {
  await host.execOk(`${REPO_ROOT}/test/fixtures/e2e/flatpak/publish-app.sh`, [fixturePath('good')], {timeout: 300_000})
  await host.execOk('flatpak', ['install', '--system', '-y', '--noninteractive', 'local', 'org.sysexthelper.App'], {timeout: 300_000})
  const installed = await host.cli(['install', 'org.sysexthelper.App', '--json'], {timeout: 120_000})
  if (installed.exitCode !== 0) throw new Error(`install failed: ${installed.stdout}${installed.stderr}`)
  const times: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const r = await host.sh(`s=$(date +%s%N); ${GUEST_NODE} ${REPO_ROOT}/bin/run.js sync >/dev/null 2>&1 || exit 99; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`)
    times.push(Number(r.stdout.trim()) / 1000)
  }
  const node = await host.sh(`s=$(date +%s%N); ${GUEST_NODE} ${REPO_ROOT}/bin/run.js --version >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`)
  console.log(`${flavor}: no-op sync median ${median(times).toFixed(0)} ms over ${RUNS} runs (goal 300 ms); 'sysext-helper --version' ${(Number(node.stdout.trim()) / 1000).toFixed(0)} ms`)
} finally {
  await host.stop()
}
