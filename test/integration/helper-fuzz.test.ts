/**
 * Fuzzing the monitor helper on a private bus: random and mutated messages
 * (wrong signatures, fd indexes beyond the attached fds, huge arrays,
 * truncated bodies, floods of fds, replies and signals nobody asked for) from
 * raw connections. Whatever gets through the bus, the service stays up,
 * answers Peer.Ping, answers the bad-index Start with InvalidArgs, and its
 * open fd count (/proc/PID/fd) comes back to where it was. Seeded: a failure
 * is reproducible (FUZZ_SEED=N to choose another run).
 */
import assert from 'node:assert/strict'
import {closeSync, openSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'
import dbus from 'dbus-next'
import {BusConnection} from '../../src/capture/connection.js'
import {parseMessage} from '../../src/capture/wire.js'
import {HELPER_BUS_NAME, HELPER_INTERFACE, HELPER_OBJECT_PATH} from '../../src/helper/constants.js'
import {type Service, startService} from '../lib/helper-service.js'
import {NOBODY, type PrivateBus, connectClient, startPrivateBus} from '../lib/private-bus.js'
import {FuzzClient, prng} from '../lib/fuzz.js'
import {type RawMessageSpec, type RawValue, body} from '../lib/raw-message.js'

const SEED = Number(process.env.FUZZ_SEED ?? 14)
const trace = (what: string): void => {
  if (process.env.FUZZ_TRACE) console.log(`# ${what}`)
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const TARGET = {destination: HELPER_BUS_NAME, path: HELPER_OBJECT_PATH}
const START = {...TARGET, interface: HELPER_INTERFACE, member: 'Start'}

describe('the monitor helper under fuzzing', {timeout: 240_000}, () => {
  let bus: PrivateBus
  let service: Service
  let pinger: dbus.MessageBus
  /** Everything on the bus, for the service's answers. */
  let monitor: BusConnection
  const seen: Buffer[] = []
  /** Fds we send (the kernel duplicates them into the receiver on every message). */
  const spare: number[] = []
  let fuzz: FuzzClient
  const fdCount = (): number => fuzz.fdCount()
  const alive = (): boolean => fuzz?.alive() ?? false
  const ping = (): Promise<void> => fuzz.ping()
  const send = (spec: Omit<RawMessageSpec, 'serial'>, fds: number[] = []): Promise<number> => fuzz.send(spec, fds)
  const barrier = (): Promise<void> => fuzz.barrier()


  const answerTo = async (serial: number, from: string): Promise<ReturnType<typeof parseMessage> | undefined> => {
    for (let i = 0; i < 200; i++) {
      for (const f of seen) {
        const m = parseMessage(f, true)
        if (m.replySerial === serial && m.sender === from && m.destination === fuzz.conn?.uniqueName) return m
      }
      await sleep(25)
    }
    return undefined
  }

  before(async () => {
    bus = await startPrivateBus({uid: NOBODY.uid, gid: NOBODY.gid})
    service = startService(bus.address, ['--idle-timeout', '600'])
    await service.waitForLog(/ready on/)
    trace('service ready')
    pinger = await connectClient(bus.address)
    fuzz = new FuzzClient(bus.address, service, pinger, HELPER_BUS_NAME, trace)
    trace('pinger')
    monitor = await BusConnection.open(bus.address, {unixFd: true})
    await monitor.becomeMonitor(["type='error'", "type='method_return'"], (frames) => {
      for (const f of frames) seen.push(Buffer.from(f))
    })
    trace('monitor')
    for (let i = 0; i < 16; i++) spare.push(openSync('/dev/null', 'r'))
  })
  after(async () => {
    for (const fd of spare) closeSync(fd)
    fuzz?.close()
    monitor?.close()
    pinger?.disconnect()
    if (service && alive()) {
      service.child.kill('SIGTERM')
      await service.exit
    }
    await bus?.stop()
  })

  it('survives everything a client can send, answers Ping, and closes every fd it received', async () => {
    const owner = String((await pinger.call(new dbus.Message({destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetNameOwner', signature: 's', body: [HELPER_BUS_NAME]})))!.body[0])
    trace('owner')
    // Warm up every path once (lazy allocations are not leaks), then take the baseline.
    await send({...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [5, []])}, spare.slice(0, 1))
    await send({...TARGET, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect', unixFds: 2}, spare.slice(0, 2))
    trace('warm-up sent')
    await barrier()
    await ping()
    trace('warm-up answered')
    await sleep(300)
    const baseline = fdCount()

    // 1. The crash of issue 14: Start whose `h` is index 5, one fd attached. It is answered, not fatal.
    const serial = await send({...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [5, []])}, spare.slice(0, 1))
    trace('bad index sent')
    const answer = await answerTo(serial, owner)
    assert.equal(answer?.type, 3, 'no error reply to the bad-index Start')
    assert.equal(answer?.errorName, 'org.freedesktop.DBus.Error.InvalidArgs')
    await ping()

    // 2. The fd flood: 300 Introspect calls with 16 fds each, and other calls nobody consumes fds of.
    for (let i = 0; i < 300; i++) {
      const members = [
        {interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect'},
        {interface: 'org.freedesktop.DBus.Peer', member: 'Ping'},
        {interface: 'org.freedesktop.DBus.Properties', member: 'GetAll', signature: 's', body: body('s', [HELPER_INTERFACE])},
        {interface: HELPER_INTERFACE, member: 'NoSuchMethod'},
      ]
      await send({...TARGET, ...members[i % members.length], unixFds: 16}, spare)
    }
    await barrier()
    await ping()

    // 3. Known shapes gone wrong.
    const rand = prng(SEED)
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]
    const shapes: Array<() => [Omit<RawMessageSpec, 'serial'>, number[]]> = [
      // h index beyond the fds, with 0..3 fds
      () => {
        const n = Math.floor(rand() * 4)
        return [{...START, signature: 'ha{sv}', unixFds: n, body: body('ha{sv}', [n + Math.floor(rand() * 1000), []])}, spare.slice(0, n)]
      },
      // declared fds that do not come, or more than declared
      () => [{...START, signature: 'ha{sv}', unixFds: 3, body: body('ha{sv}', [0, []])}, spare.slice(0, 1)],
      () => [{...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [0, []])}, spare.slice(0, 4)],
      // wrong signatures for every method
      () => [{...START, signature: pick(['', 's', 'h', 'hs', 'ha{ss}', 'ua{sv}', 'hh']), unixFds: 1, body: body('u', [0])}, spare.slice(0, 1)],
      () => [{...TARGET, interface: HELPER_INTERFACE, member: 'Stop', signature: pick(['', 's', 'u', 'oo']), body: body('u', [7])}, []],
      () => [{...TARGET, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: pick(['ss', 's', '']), body: body('ss', [HELPER_INTERFACE, pick(['__proto__', 'constructor', 'Version', 'x'])])}, []],
      // options of the wrong types and sizes, valid fd: a capture must not start from these
      () => [{...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [0, [[pick(['Duration', 'MatchRules', 'BufferSize', 'Bogus', '']), pick<{variant: string; value: RawValue}>([{variant: 's', value: 'x'}, {variant: 'u', value: 0}, {variant: 'as', value: ['a']}, {variant: 'ay', value: Buffer.from('zz')}, {variant: 'v', value: {variant: 'u', value: 1}}])]]])}, spare.slice(0, 1)],
      // huge arrays: 200,000 match rules; 2 MiB of bytes to a method that takes none
      () => [{...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [0, [['MatchRules', {variant: 'as', value: Array.from({length: 200_000}, (_, i) => `r${i}`)}]]])}, spare.slice(0, 1)],
      () => [{...TARGET, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect', signature: 'ay', unixFds: 16, body: body('ay', [Buffer.alloc(2 * 1024 * 1024, 7)])}, spare],
      // truncated bodies: the declared signature wants more than there is
      () => [{...START, signature: 'ha{sv}', unixFds: 1, body: body('u', [0])}, spare.slice(0, 1)],
      // replies, errors and signals nobody asked for, with fds
      () => [{type: pick([2, 3]), destination: HELPER_BUS_NAME, replySerial: Math.floor(rand() * 10), errorName: 'x.y.Z', signature: 'h', unixFds: 2, body: body('h', [1])}, spare.slice(0, 2)],
      () => [{type: 4, destination: HELPER_BUS_NAME, path: '/', interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', signature: pick(['sss', 'h', '']), unixFds: 1, body: body('sss', [':1.1', ':1.1', ''])}, spare.slice(0, 1)],
      // no reply expected
      () => [{...START, flags: 1, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [9, []])}, spare.slice(0, 1)],
    ]
    // 4. And random byte mutations of a valid Start (whatever the bus lets through).
    const valid = (): [Omit<RawMessageSpec, 'serial'>, number[]] => [{...START, signature: 'ha{sv}', unixFds: 1, body: body('ha{sv}', [0, [['Duration', {variant: 's', value: 'x'}]]])}, spare.slice(0, 1)]
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 60; i++) {
        const shape = Math.floor(rand() * shapes.length)
        const [spec, fds] = shapes[shape]()
        trace(`round ${round} shape ${shape}`)
        await send(spec, fds)
      }
      for (let i = 0; i < 40; i++) {
        const [spec, fds] = valid()
        const b = Buffer.from(spec.body!)
        for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256)
        await send({...spec, body: b, signature: rand() < 0.2 ? pick(['h', 'ha{sv}', 'a{sv}h', 'hv']) : spec.signature}, fds)
      }
      await barrier()
      await ping()
    }

    // Every fd the service received has been closed (a capture a mutation may have started ends with its caller).
    fuzz?.close()
    await ping()
    let now = fdCount()
    for (let i = 0; i < 100 && now > baseline; i++) {
      await sleep(100)
      now = fdCount()
    }
    assert.equal(now, baseline, `open fds: ${now}, baseline ${baseline}; service log:\n${service.log().slice(-4000)}`)
    assert.ok(alive())
    assert.doesNotMatch(service.log(), /^fatal:/m)
    console.log(`# fuzz seed ${SEED}: ${fuzz.reconnects} reconnects after the bus refused a message; fds ${baseline} -> ${now}`)
  })
})
