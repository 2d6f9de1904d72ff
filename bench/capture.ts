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
import {BusConnection} from '../src/dbus/connection.js'
import {MessageType, marshalCall} from '../src/dbus/wire.js'
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
async function flood(conn: BusConnection, msg: Buffer, count: number): Promise<number> {
  const perBatch = Math.max(1, Math.floor((256 * 1024) / msg.length))
  const t0 = performance.now()
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
  const argv =
    kind === 'sysext-helper' ? [process.execPath, CLI, 'capture', '--address', address, '--output', '-', '--no-initial-state']
    : kind === 'dbus-monitor' ? ['dbus-monitor', '--pcap', '--address', address]
    : ['busctl', `--address=${address}`, 'capture']
  const child = spawn(argv[0], argv.slice(1), {stdio: ['ignore', fd, 'ignore']})
  closeSync(fd)
  return child
}

/** Waits until the file stops growing (the monitor has written what it got). */
async function settle(file: string): Promise<void> {
  let last = -1
  for (let i = 0; i < 600; i++) {
    const size = statSync(file).size
    if (size === last) return
    last = size
    await sleep(250)
  }
}

function countMarker(file: string, marker: string): number {
  const buf = readFileSync(file)
  let n = 0
  for (let at = buf.indexOf(marker); at >= 0; at = buf.indexOf(marker, at + marker.length)) n++
  return n
}

async function main(): Promise<void> {
  const rounds = arg('rounds', 2)
  const sizes: Array<[number, number]> = [[157, arg('count', 200_000)], [4096, Math.round(arg('count', 200_000) / 4)]]
  const dir = mkdtempSync(join(tmpdir(), 'sysext-bench-'))
  const bus = await startPrivateBus()
  const results: Record<string, {rate: number[]; captured: number[]; count: number}> = {}
  try {
    const sender = await BusConnection.open(bus.address)
    for (const [size, count] of sizes) {
      for (let round = 0; round < rounds; round++) {
        for (const kind of MONITORS) {
          const marker = `bench-${size}-${round}-${kind}-`
          const file = join(dir, `${kind}.out`)
          const child = startMonitor(kind, bus.address, file)
          if (child) {
            // Wait for the monitor to be active: each writes its file header once it is.
            for (let i = 0; i < 200 && statSync(file).size === 0; i++) await sleep(25)
            await sleep(200)
          }
          const rate = await flood(sender, template(size, marker), count)
          let captured = count
          if (child) {
            await settle(file)
            child.kill('SIGINT')
            await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)))
            captured = countMarker(file, marker)
          }
          const key = `${size}:${kind}`
          results[key] ??= {rate: [], captured: [], count}
          results[key].rate.push(rate)
          results[key].captured.push(captured)
        }
      }
    }
    sender.close()
  } finally {
    await bus.stop()
    rmSync(dir, {recursive: true, force: true})
  }

  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  console.log(`dbus-daemon private bus, ${rounds} round(s) per cell, median rate; captured = of the last round's messages\n`)
  console.log('size   monitor         msg/s     vs none  vs dbus-monitor  captured')
  for (const [size] of sizes) {
    const none = median(results[`${size}:none`].rate)
    const dm = median(results[`${size}:dbus-monitor`].rate)
    for (const kind of MONITORS) {
      const r = results[`${size}:${kind}`]
      const rate = median(r.rate)
      const captured = kind === 'none' ? '-' : `${r.captured[r.captured.length - 1]}/${r.count}`
      console.log(`${String(size).padEnd(6)} ${kind.padEnd(15)} ${rate.toFixed(0).padStart(8)}  ${(rate / none).toFixed(2).padStart(7)}  ${(rate / dm).toFixed(2).padStart(15)}  ${captured}`)
    }
  }
}

await main()
