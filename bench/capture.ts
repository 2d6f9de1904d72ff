/**
 * Bus throughput as a real client sees it, with no monitor, with
 * `sysext-helper capture`, with `dbus-monitor --pcap` and with `busctl
 * capture` attached, in one run; and how many of the sent messages each
 * monitor captured.
 *
 * A separate sender process floods signals; a separate receiver process (an
 * ordinary connection with a match rule) receives them; each monitor writes
 * a file. The rate is what the receiver got per second, from the sender's
 * first message to the receiver's last (not the sender's rate until its own
 * round trip: the bus may still be writing to the receiver and the monitor
 * then). CPU per message of each process is read from /proc.
 *
 *   npm run build && node dist/bench/capture.js [--count N] [--rounds R] [--sizes 157,4096] [--only LIST]
 *       a private dbus-daemon on this machine (default)
 *   node dist/bench/capture.js --host debian13
 *       the system bus (dbus-broker) of a booted Debian 13 test host (root, e2e cache)
 *   node dist/bench/capture.js --address ADDR [--json]
 *       any bus this process may monitor
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {BusConnection} from '../src/capture/connection.js'
import {MessageType, marshalCall} from '../src/capture/wire.js'

const SELF = new URL(import.meta.url).pathname
const CLIENTS_PY = new URL('../../bench/clients.py', import.meta.url).pathname
const CLI = new URL('../../bin/run.js', import.meta.url).pathname
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const now = (): number => performance.timeOrigin + performance.now()

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const num = (name: string, fallback: number): number => Number(arg(name) ?? fallback)

/**
 * Which sender and receiver: 'node' (this file: the sender writes 256 KiB batches, the receiver
 * counts frames unparsed: the cheapest clients) or 'python' (bench/clients.py: one send(2) per
 * message and a header read per message in Python, as client libraries do).
 */
const CLIENTS = arg('clients') ?? 'node'

/** 'null-output' (only with --only): our monitor writing to /dev/null, the bus's cost of a monitor without the output's. */
type Monitor = 'none' | 'sysext-helper' | 'dbus-monitor' | 'busctl' | 'null-output'
const MONITORS: Monitor[] = ['none', 'sysext-helper', 'dbus-monitor', 'busctl']
const ours = (kind: Monitor): boolean => kind === 'sysext-helper' || kind === 'null-output'
const MEMBER = 'Tick'
const INTERFACE = 'org.example.Bench'

/** A signal of exactly `size` bytes carrying a marker string, with serial 1 (patched per copy). */
function template(size: number, marker: string): Buffer {
  const base = (pad: number): Buffer =>
    marshalCall({serial: 1, type: MessageType.Signal, path: '/bench', interface: INTERFACE, member: MEMBER, signature: 's', body: [marker + 'z'.repeat(pad)]})
  const pad = size - base(0).length
  if (pad < 0) throw new Error(`messages cannot be smaller than ${base(0).length} bytes`)
  return base(pad)
}

// ---- the sender and receiver processes ---------------------------------------------

/** Sends `count` copies (fresh serials) as fast as the bus takes them; prints {t0, t1} (ms since the epoch). */
async function senderMain(address: string, size: number, count: number, marker: string): Promise<void> {
  const conn = await BusConnection.open(address)
  const msg = template(size, marker)
  const perBatch = Math.max(1, Math.floor((256 * 1024) / msg.length))
  process.stdout.write('ready\n')
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()))
  process.stdin.destroy() // else it keeps this process alive
  const t0 = now()
  for (let sent = 0; sent < count; ) {
    const n = Math.min(perBatch, count - sent)
    const batch = Buffer.allocUnsafe(n * msg.length)
    for (let i = 0; i < n; i++) {
      msg.copy(batch, i * msg.length)
      batch.writeUInt32LE(conn.nextSerial(), i * msg.length + 8)
    }
    await conn.sendRaw(batch)
    sent += n
  }
  await conn.callDriver('GetId')
  const cpu = process.cpuUsage()
  process.stdout.write(`${JSON.stringify({t0, t1: now(), cpu: (cpu.user + cpu.system) / 1e6})}\n`)
  conn.close()
}

/** Receives the bench's signals until `count` arrived or none for 3 s; prints {received, first, last}. */
async function receiverMain(address: string, count: number): Promise<void> {
  const conn = await BusConnection.open(address)
  let received = 0
  let first = 0
  let last = 0
  let done!: () => void
  const finished = new Promise<void>((resolve) => (done = resolve))
  // Counted unparsed, as a C client's header check would cost: only our signals match the rule.
  conn.onIncomingFrame = (frame) => {
    if (frame[1] !== MessageType.Signal || frame.length < 100) return
    last = now()
    if (received++ === 0) first = last
    if (received >= count) done()
  }
  await conn.callDriver('AddMatch', 's', [`type='signal',interface='${INTERFACE}',member='${MEMBER}'`])
  process.stdout.write('ready\n')
  const idle = setInterval(() => {
    if (received > 0 && now() - last > 3000) done()
  }, 250)
  await finished
  clearInterval(idle)
  const cpu = process.cpuUsage()
  process.stdout.write(`${JSON.stringify({received, first, last, cpu: (cpu.user + cpu.system) / 1e6})}\n`)
  conn.close()
}

// ---- one run ------------------------------------------------------------------------

function lines(child: ChildProcess): () => Promise<string> {
  let buf = ''
  const waiting: Array<(line: string) => void> = []
  const queued: string[] = []
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString()
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      const w = waiting.shift()
      if (w) w(line)
      else queued.push(line)
    }
  })
  return () => (queued.length > 0 ? Promise.resolve(queued.shift()!) : new Promise((resolve) => waiting.push(resolve)))
}

/** Extra node options for our monitor only, e.g. BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile it. */
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
/** BENCH_PERF=DIR records the bus and the monitor with `perf record -g` during each run (DIR/{bus,monitor}-SIZE-MONITOR.data, the last round's). */
const PERF_DIR = process.env.BENCH_PERF

function startMonitor(kind: Monitor, address: string, file: string): ChildProcess | null {
  if (kind === 'none') return null
  const fd = openSync(file, 'w')
  const errFd = openSync(`${file}.err`, 'w')
  const argv =
    ours(kind) ? [process.execPath, ...NODE_ARGS, CLI, 'capture', '--address', address, '--output', kind === 'null-output' ? '/dev/null' : '-', '--no-initial-state', '--json']
    : kind === 'dbus-monitor' ? ['dbus-monitor', '--pcap', '--address', address]
    : ['busctl', `--address=${address}`, 'capture']
  // BENCH_WRAP='chrt -b 0' runs our monitor under a command prefix (BENCH_WRAP_PEERS: the peers), for scheduling experiments.
  const wrap = (process.env[ours(kind) ? 'BENCH_WRAP' : 'BENCH_WRAP_PEERS'] ?? '').split(' ').filter(Boolean)
  const child = spawn([...wrap, ...argv][0], [...wrap, ...argv].slice(1), {stdio: ['ignore', fd, errFd]})
  closeSync(fd)
  closeSync(errFd)
  return child
}

/** CPU seconds (user + system, all threads) a process has used so far, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0
  }
}

/** A count from our capture's --json summary (on stderr, or on stdout when the pcap is not there), or NaN. */
function reported(kind: Monitor, file: string, key: 'dropped' | 'messages'): number {
  try {
    const text = readFileSync(kind === 'null-output' ? file : `${file}.err`, 'utf8')
    return Number((JSON.parse(text.slice(text.indexOf('{'))) as Record<string, number>)[key] ?? NaN)
  } catch {
    return NaN
  }
}

/** Waits until the file has not grown for 300 ms (the monitor has written what it got). */
async function settle(file: string): Promise<void> {
  let last = -1
  for (let quiet = 0; quiet < 60; ) {
    const size = statSync(file).size
    if (size !== last) {
      last = size
      quiet = 0
    } else quiet++
    await sleep(5)
  }
}

function countMarker(file: string, marker: string): number {
  const buf = readFileSync(file)
  let n = 0
  for (let at = buf.indexOf(marker); at >= 0; at = buf.indexOf(marker, at + marker.length)) n++
  return n
}

interface Sample {
  /** Messages/s the receiver got, from the sender's first message to the receiver's last. */
  rate: number
  /** Messages/s the sender got through, until its round trip (what the old bench measured). */
  senderRate: number
  received: number
  captured: number
  drops: number
  /** µs of CPU per message. */
  cpu: {monitor: number; bus: number; sender: number; receiver: number}
}

async function runOne(address: string, busPid: number | undefined, kind: Monitor, size: number, count: number, marker: string, dir: string): Promise<Sample> {
  const file = join(dir, `${kind}.out`)
  const monitor = startMonitor(kind, address, file)
  if (monitor) {
    for (let i = 0; i < 400 && statSync(file).size === 0; i++) await sleep(25)
    await sleep(200)
  }
  const receiver =
    CLIENTS === 'python' ? spawn('python3', [CLIENTS_PY, 'receiver', address, String(count)], {stdio: ['ignore', 'pipe', 'inherit']})
    : spawn(process.execPath, [SELF, '--role', 'receiver', '--address', address, '--count', String(count)], {stdio: ['ignore', 'pipe', 'inherit']})
  const fromReceiver = lines(receiver)
  if ((await fromReceiver()) !== 'ready') throw new Error('receiver did not start')
  const sender =
    CLIENTS === 'python' ? spawn('python3', [CLIENTS_PY, 'sender', address, String(size), String(count), marker], {stdio: ['pipe', 'pipe', 'inherit']})
    : spawn(process.execPath, [SELF, '--role', 'sender', '--address', address, '--size', String(size), '--count', String(count), '--marker', marker], {stdio: ['pipe', 'pipe', 'inherit']})
  const fromSender = lines(sender)
  if ((await fromSender()) !== 'ready') throw new Error('sender did not start')
  const record = (what: string, pid: number | undefined): ChildProcess | null => {
    if (!PERF_DIR || !pid) return null
    const perf = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-g', '-p', String(pid), '-o', join(PERF_DIR, `${what}-${size}-${kind}.data`)], {stdio: 'ignore'})
    perf.on('error', (err) => {
      throw new Error(`BENCH_PERF needs perf on this host: ${err.message}`)
    })
    return perf
  }
  const perfs = [record('bus', busPid), record('monitor', monitor?.pid)].filter((p) => p !== null)
  if (perfs.length > 0) await sleep(300)
  // Start-up (connect, module loading) is not counted: CPU so far of the ready sender and receiver.
  const cpu0 = {monitor: cpuSeconds(monitor?.pid), bus: cpuSeconds(busPid), sender: cpuSeconds(sender.pid), receiver: cpuSeconds(receiver.pid)}
  sender.stdin!.write('go\n')
  const sent = JSON.parse(await fromSender()) as {t0: number; t1: number; cpu: number}
  const got = JSON.parse(await fromReceiver()) as {received: number; first: number; last: number; cpu: number}
  // The sender and receiver report their own CPU (they may have exited by now).
  const cpu1 = {monitor: cpuSeconds(monitor?.pid), bus: cpuSeconds(busPid), sender: sent.cpu, receiver: got.cpu}
  for (const perf of perfs) {
    perf.kill('SIGINT')
    await new Promise((resolve) => perf.once('exit', resolve))
  }
  let captured = count
  let drops = 0
  if (monitor) {
    await settle(file)
    monitor.kill('SIGINT')
    await new Promise((resolve) => (monitor.exitCode !== null || monitor.signalCode !== null ? resolve(null) : monitor.once('exit', resolve)))
    // To /dev/null: what it wrote, all the bus's messages of the run (a few more than ours).
    captured = kind === 'null-output' ? reported(kind, file, 'messages') : countMarker(file, marker)
    drops = ours(kind) ? reported(kind, file, 'dropped') : NaN
  }
  const per = (a: number, b: number): number => ((b - a) / count) * 1e6
  return {
    rate: got.received / ((got.last - sent.t0) / 1000),
    senderRate: count / ((sent.t1 - sent.t0) / 1000),
    received: got.received,
    captured,
    drops,
    cpu: {monitor: per(cpu0.monitor, cpu1.monitor), bus: per(cpu0.bus, cpu1.bus), sender: per(cpu0.sender, cpu1.sender), receiver: per(cpu0.receiver, cpu1.receiver)},
  }
}

type Results = Record<string, Sample[]>

async function measure(address: string, busPid: number | undefined, monitors: Monitor[], sizes: Array<[number, number]>, rounds: number): Promise<Results> {
  const dir = mkdtempSync(join(tmpdir(), 'sysext-bench-'))
  const results: Results = {}
  try {
    for (const [size, count] of sizes) {
      for (let round = 0; round < rounds; round++) {
        for (const kind of monitors) {
          const sample = await runOne(address, busPid, kind, size, count, `bench-${size}-${round}-${kind}-`, dir)
          ;(results[`${size}:${kind}`] ??= []).push(sample)
          if (process.env.BENCH_TRACE) console.error(`# ${size} ${kind} round ${round}: ${sample.rate.toFixed(0)}/s`)
        }
      }
    }
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
  return results
}

function report(title: string, results: Results, monitors: Monitor[], sizes: Array<[number, number]>, rounds: number, load: string): void {
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  const fmt = (x: number, width: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-').padStart(width)
  console.log(`${title}: ${rounds} round(s) per cell, medians; received/captured = minimum over the rounds; load average ${load}`)
  console.log('rate = msg/s the receiver got (sender start to last received); vs = ratio of rates in this run; snd rate = the sender\'s own rate until its round trip (the old measure); cpu = µs per message\n')
  console.log('size   monitor          rate/s  vs none  vs dbus-mon  vs busctl   snd rate/s  mon cpu  bus cpu  snd cpu  rcv cpu  received        captured        drops')
  for (const [size, count] of sizes) {
    const rateOf = (k: Monitor): number => (results[`${size}:${k}`] ? median(results[`${size}:${k}`].map((s) => s.rate)) : NaN)
    for (const kind of monitors) {
      const r = results[`${size}:${kind}`]
      const rate = rateOf(kind)
      const m = (f: (s: Sample) => number): number => median(r.map(f))
      console.log(
        `${String(size).padEnd(6)} ${kind.padEnd(15)} ${fmt(rate, 8, 0)}  ${fmt(rate / rateOf('none'), 7)}  ${fmt(rate / rateOf('dbus-monitor'), 11)}  ${fmt(rate / rateOf('busctl'), 9)}` +
          `  ${fmt(m((s) => s.senderRate), 11, 0)}  ${fmt(m((s) => s.cpu.monitor), 7, 1)}  ${fmt(m((s) => s.cpu.bus), 7, 1)}  ${fmt(m((s) => s.cpu.sender), 7, 1)}  ${fmt(m((s) => s.cpu.receiver), 7, 1)}` +
          `  ${`${Math.min(...r.map((s) => s.received))}/${count}`.padEnd(14)}  ${(kind === 'none' ? '-' : `${Math.min(...r.map((s) => s.captured))}/${count}`).padEnd(14)}  ${ours(kind) ? Math.max(...r.map((s) => s.drops)) : '-'}`,
      )
    }
  }
}

/** The process that routes messages: the bus driver's pid, or for dbus-broker-launch its dbus-broker child. */
async function busPidOf(address: string): Promise<number | undefined> {
  const conn = await BusConnection.open(address)
  try {
    const pid = Number((await conn.callDriver('GetConnectionUnixProcessID', 's', ['org.freedesktop.DBus'])).body[0]) || undefined
    if (pid === undefined || !readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('dbus-broker-lau')) return pid
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'latin1')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        if (ppid === pid && stat.includes('(dbus-broker)')) return Number(entry)
      } catch {
        // gone
      }
    }
    return pid
  } catch {
    return undefined
  } finally {
    conn.close()
  }
}

async function main(): Promise<void> {
  const role = arg('role')
  if (role === 'sender') return senderMain(arg('address')!, num('size', 157), num('count', 1000), arg('marker')!)
  if (role === 'receiver') return receiverMain(arg('address')!, num('count', 1000))

  const rounds = num('rounds', 3)
  const count = num('count', 200_000)
  const only = arg('only')
  const monitors = only ? (['none', ...only.split(',')] as Monitor[]).filter((m, i, a) => a.indexOf(m) === i) : MONITORS
  const sizes: Array<[number, number]> = (arg('sizes') ?? '157,4096').split(',').map(Number).map((size) => [size, size > 1024 ? Math.round(count / 4) : count])
  const load = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  const host = arg('host')
  if (host) {
    // Run this bench inside a booted test host, on its system bus.
    const {bootHost, GUEST_NODE} = await import('../test/e2e/lib/hosts.js')
    const guest = await bootHost(host as 'debian12' | 'debian13')
    try {
      const passOn = process.argv.slice(2).filter((a, i, all) => a !== '--host' && all[i - 1] !== '--host')
      // The experiment knobs go along (the guest gets a clean environment otherwise).
      const env = Object.fromEntries(['SYSEXT_CAPTURE_COALESCE_MS', 'BENCH_NODE_ARGS', 'BENCH_PERF', 'BENCH_WRAP', 'BENCH_WRAP_PEERS'].filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]!]))
      const r = await guest.exec(GUEST_NODE, [SELF, '--address', 'unix:path=/run/dbus/system_bus_socket', '--json', ...passOn], {timeout: 1_800_000, env})
      if (r.exitCode !== 0) throw new Error(`the bench failed in the ${host} host: ${r.stderr}`)
      const {results, busName, loadSeen} = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {results: Results; busName: string; loadSeen: string}
      report(`${busName} (system bus of the ${host} test host)`, results, monitors, sizes, rounds, `${loadSeen} (outside: ${load()})`)
    } finally {
      await guest.stop()
    }
    return
  }
  let address = arg('address')
  let stop = async (): Promise<void> => {}
  let busName = 'bus'
  if (!address) {
    const {startPrivateBus} = await import('../test/lib/private-bus.js')
    const bus = await startPrivateBus()
    address = bus.address
    stop = bus.stop
    busName = 'dbus-daemon private bus'
  }
  try {
    const busPid = await busPidOf(address)
    if (busPid) busName = `${readFileSync(`/proc/${busPid}/comm`, 'utf8').trim()} (pid ${busPid})`
    const loadBefore = load()
    const results = await measure(address, busPid, monitors, sizes, rounds)
    const loadSeen = `${loadBefore} -> ${load()}`
    if (process.argv.includes('--json')) console.log(JSON.stringify({results, busName, loadSeen}))
    else report(busName, results, monitors, sizes, rounds, loadSeen)
  } finally {
    await stop()
  }
}

await main()
