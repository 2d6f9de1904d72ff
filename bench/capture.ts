/**
 * Bus throughput with no monitor, with `sysext-helper capture`, with
 * `dbus-monitor --pcap` and with `busctl capture` attached, in one run on a
 * private dbus-daemon; and how many of the sent messages each one captured.
 *
 *   npm run build && node dist/bench/capture.js [--count N] [--rounds R]
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {BusConnection} from '../src/capture/connection.js'
import {MessageType, marshalCall} from '../src/capture/wire.js'
import {startPrivateBus} from '../test/lib/private-bus.js'

const CLI = new URL('../../bin/run.js', import.meta.url).pathname
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}

type Monitor = 'none' | 'sysext-helper' | 'dbus-monitor' | 'busctl'
const MONITORS: Monitor[] = ['none', 'sysext-helper', 'dbus-monitor', 'busctl']

/** A signal of exactly `size` bytes carrying a marker string, with serial 0 (patched per copy). */
function template(size: number, marker: string): Buffer {
  const base = (pad: number): Buffer =>
    marshalCall({serial: 1, type: MessageType.Signal, path: '/bench', interface: 'org.example.Bench', member: 'Tick', signature: 's', body: [marker + 'z'.repeat(pad)]})
  const pad = size - base(0).length
  if (pad < 0) throw new Error(`messages cannot be smaller than ${base(0).length} bytes`)
  const msg = base(pad)
  if (msg.length !== size) throw new Error(`built ${msg.length} bytes, wanted ${size}`)
  return msg
}

/** Sends `count` copies (fresh serials) as fast as the bus takes them; returns messages/s until a round trip confirms. */
async function flood(conn: BusConnection, msg: Buffer, count: number, t0: number): Promise<number> {
  const perBatch = Math.max(1, Math.floor((256 * 1024) / msg.length))
  let sent = 0
  while (sent < count) {
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
  return count / ((performance.now() - t0) / 1000)
}

function startMonitor(kind: Monitor, address: string, file: string): ChildProcess | null {
  if (kind === 'none') return null
  const fd = openSync(file, 'w')
  const errFd = openSync(`${file}.err`, 'w')
  const argv =
    kind === 'sysext-helper' ? [process.execPath, CLI, 'capture', '--address', address, '--output', '-', '--no-initial-state', '--json']
    : kind === 'dbus-monitor' ? ['dbus-monitor', '--pcap', '--address', address]
    : ['busctl', `--address=${address}`, 'capture']
  const child = spawn(argv[0], argv.slice(1), {stdio: ['ignore', fd, errFd]})
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

/** Messages our capture reported as dropped (its --json summary on stderr), or NaN. */
function reportedDrops(file: string): number {
  try {
    const text = readFileSync(`${file}.err`, 'utf8')
    const json = JSON.parse(text.slice(text.indexOf('{'))) as {dropped?: number; summary?: {dropped?: number}}
    return Number(json.dropped ?? json.summary?.dropped ?? NaN)
  } catch {
    return NaN
  }
}

/**
 * Waits until the file has not grown for 300 ms (the monitor has written what
 * it got); returns when it last grew (performance.now()), polled every 5 ms.
 */
async function settle(file: string): Promise<number> {
  let last = -1
  let grewAt = performance.now()
  for (let quiet = 0; quiet < 60; ) {
    const size = statSync(file).size
    if (size !== last) {
      last = size
      grewAt = performance.now()
      quiet = 0
    } else quiet++
    await sleep(5)
  }
  return grewAt
}

function countMarker(file: string, marker: string): number {
  const buf = readFileSync(file)
  let n = 0
  for (let at = buf.indexOf(marker); at >= 0; at = buf.indexOf(marker, at + marker.length)) n++
  return n
}

interface Cell {
  /** Messages/s the sender got through the bus (until a round trip confirmed the last one). */
  rate: number[]
  /** Messages/s until the monitor's output stopped growing (everything it got is written). */
  delivered: number[]
  /** Monitor and dbus-daemon CPU, µs per message. */
  monitorCpu: number[]
  busCpu: number[]
  senderCpu: number[]
  captured: number[]
  drops: number[]
  count: number
}

async function main(): Promise<void> {
  const rounds = arg('rounds', 2)
  const count = arg('count', 200_000)
  const onlyArg = process.argv.indexOf('--only')
  const monitors = onlyArg >= 0 ? (['none', ...process.argv[onlyArg + 1].split(',')] as Monitor[]).filter((m, i, a) => a.indexOf(m) === i) : MONITORS
  const sizeArg = process.argv.indexOf('--sizes')
  const sizeList = sizeArg >= 0 ? process.argv[sizeArg + 1].split(',').map(Number) : [157, 4096]
  const sizes: Array<[number, number]> = sizeList.map((size) => [size, size > 1024 ? Math.round(count / 4) : count])
  const dir = mkdtempSync(join(tmpdir(), 'sysext-bench-'))
  const bus = await startPrivateBus()
  const results: Record<string, Cell> = {}
  try {
    const sender = await BusConnection.open(bus.address)
    for (const [size, count] of sizes) {
      for (let round = 0; round < rounds; round++) {
        for (const kind of monitors) {
          const marker = `bench-${size}-${round}-${kind}-`
          const file = join(dir, `${kind}.out`)
          const child = startMonitor(kind, bus.address, file)
          if (child) {
            // Wait for the monitor to be active: each writes its file header once it is.
            for (let i = 0; i < 200 && statSync(file).size === 0; i++) await sleep(25)
            await sleep(200)
          }
          const cpu0 = cpuSeconds(child?.pid)
          const busCpu0 = cpuSeconds(bus.pid)
          const senderCpu0 = process.cpuUsage()
          const t0 = performance.now()
          const rate = await flood(sender, template(size, marker), count, t0)
          let captured = count
          let delivered = rate
          let drops = 0
          const busCpu = cpuSeconds(bus.pid) - busCpu0
          const senderUsage = process.cpuUsage(senderCpu0)
          const senderCpu = (senderUsage.user + senderUsage.system) / 1e6
          let monitorCpu = 0
          if (child) {
            delivered = count / ((Math.max(await settle(file), t0 + 1) - t0) / 1000)
            monitorCpu = cpuSeconds(child.pid) - cpu0
            child.kill('SIGINT')
            await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)))
            captured = countMarker(file, marker)
            drops = kind === 'sysext-helper' ? reportedDrops(file) : NaN
          }
          const key = `${size}:${kind}`
          results[key] ??= {rate: [], delivered: [], monitorCpu: [], busCpu: [], senderCpu: [], captured: [], drops: [], count}
          const r = results[key]
          r.rate.push(rate)
          r.delivered.push(delivered)
          r.monitorCpu.push((monitorCpu / count) * 1e6)
          r.busCpu.push((busCpu / count) * 1e6)
          r.senderCpu.push((senderCpu / count) * 1e6)
          r.captured.push(captured)
          r.drops.push(drops)
        }
      }
    }
    sender.close()
  } finally {
    await bus.stop()
    rmSync(dir, {recursive: true, force: true})
  }

  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  const fmt = (x: number, width: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-').padStart(width)
  console.log(`dbus-daemon private bus, ${rounds} round(s) per cell, medians; captured = minimum over the rounds`)
  console.log('rate = sender msg/s through the bus; delivered = msg/s until the monitor had written everything; cpu = µs per message (monitor, dbus-daemon, the sending bench process)\n')
  console.log('size   monitor          rate/s  vs none  vs dbus-mon  vs busctl  delivered/s  vs dbus-mon  mon cpu  bus cpu  snd cpu  captured       drops')
  for (const [size] of sizes) {
    const none = median(results[`${size}:none`].rate)
    const dm = results[`${size}:dbus-monitor`]
    const bc = results[`${size}:busctl`]
    for (const kind of monitors) {
      const r = results[`${size}:${kind}`]
      const rate = median(r.rate)
      const delivered = median(r.delivered)
      const captured = kind === 'none' ? '-' : `${Math.min(...r.captured)}/${r.count}`
      const drops = kind === 'sysext-helper' ? String(Math.max(...r.drops)) : '-'
      console.log(
        `${String(size).padEnd(6)} ${kind.padEnd(15)} ${fmt(rate, 8, 0)}  ${fmt(rate / none, 7)}  ${fmt(dm ? rate / median(dm.rate) : NaN, 11)}  ${fmt(bc ? rate / median(bc.rate) : NaN, 9)}` +
          `  ${fmt(delivered, 11, 0)}  ${fmt(dm ? delivered / median(dm.delivered) : NaN, 11)}  ${fmt(median(r.monitorCpu), 7, 1)}  ${fmt(median(r.busCpu), 7, 1)}  ${fmt(median(r.senderCpu), 7, 1)}  ${captured.padEnd(13)}  ${drops}`,
      )
    }
  }
  if (process.argv.includes('--raw')) console.log(JSON.stringify(results))
}

await main()
