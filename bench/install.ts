/**
 * `sysext-helper install` of a small extension vs the bare commands it wraps
 * (link + systemd-sysext refresh + daemon-reload + ReloadConfig + Peer.Ping), on
 * the same booted host, same run. Prints medians and the ratio (goal <= 1.3x).
 * Run (root): npm run build && node dist/bench/install.js [debian12|debian13]
 */
import {type Flavor, type Host, bootHost, ensureRoot, fixturePath} from '../test/e2e/lib/hosts.js'

const RUNS = 7
const NAME = 'org.sysexthelper.Test1'
const TREE = '/srv/bench-ext'

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/** Wall time of a shell script inside the guest, measured inside the guest. */
async function timed(host: Host, script: string): Promise<number> {
  const r = await host.sh(`s=$(date +%s%N); ${script} >/dev/null 2>&1 || exit 99; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`, {timeout: 120_000})
  if (r.exitCode !== 0) throw new Error(`bench step failed (${r.exitCode}): ${script}\n${r.stderr}`)
  return Number(r.stdout.trim()) / 1000
}

async function reset(host: Host): Promise<void> {
  await host.sh(`systemctl stop sysext-helper-test1.service; mkdir -p /var/lib/extensions; rm -f /var/lib/extensions/*; rm -rf /var/lib/sysext-helper; systemd-sysext refresh; systemctl daemon-reload; busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig`)
}

async function benchFlavor(flavor: Flavor): Promise<void> {
  await ensureRoot(flavor)
  const host = await bootHost(flavor)
  try {
    // A root-owned tree with its release file: install links it in place, as the bare commands do.
    await host.execOk('sh', ['-c', `cp -a ${fixturePath('good')} ${TREE} && mkdir -p ${TREE}/usr/lib/extension-release.d && printf 'ID=_any\\n' > ${TREE}/usr/lib/extension-release.d/extension-release.${NAME}`])
    const bare = `ln -s ${TREE} /var/lib/extensions/${NAME} && systemd-sysext refresh && systemctl daemon-reload && busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig && busctl call ${NAME} / org.freedesktop.DBus.Peer Ping`
    const ours = `/opt/sysext-helper-node/bin/node ${fixturePath('good').replace(/\/test\/fixtures.*/, '')}/bin/run.js install ${TREE} --name ${NAME}`
    const bareTimes: number[] = []
    const ourTimes: number[] = []
    for (let i = 0; i < RUNS; i++) {
      await reset(host)
      bareTimes.push(await timed(host, bare))
      await reset(host)
      ourTimes.push(await timed(host, ours))
    }
    await reset(host)
    const node = await timed(host, '/opt/sysext-helper-node/bin/node -e 0')
    const b = median(bareTimes)
    const o = median(ourTimes)
    console.log(`${flavor}: bare commands ${b.toFixed(0)} ms, sysext-helper install ${o.toFixed(0)} ms (median of ${RUNS}); ratio ${(o / b).toFixed(2)}x; node start-up alone ${node.toFixed(0)} ms`)
  } finally {
    await host.stop()
  }
}

const flavors = (process.argv.length > 2 ? process.argv.slice(2) : ['debian12', 'debian13']) as Flavor[]
for (const flavor of flavors) await benchFlavor(flavor)
