/**
 * Fuzzing the install service on a private bus, like any root daemon every
 * user can reach: wrong signatures, fd indexes beyond the attached fds,
 * floods of fds, huge arguments, truncated and mutated bodies, unsolicited
 * replies and signals, and many concurrent callers. It stays up, answers
 * Peer.Ping, and its open fd count comes back to the baseline. Seeded
 * (FUZZ_SEED=N for another run).
 */
import assert from 'node:assert/strict'
import {closeSync, openSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'
import dbus from 'dbus-next'
import {MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_OBJECT_PATH} from '../../src/helper/constants.js'
import {CLI} from '../lib/fixtures.js'
import {MANAGER_MAIN, type Service, startService} from '../lib/helper-service.js'
import {NOBODY, type PrivateBus, connectClient, startPrivateBus} from '../lib/private-bus.js'
import {FuzzClient, prng} from '../lib/fuzz.js'
import {type RawMessageSpec, type RawValue, body} from '../lib/raw-message.js'

const SEED = Number(process.env.FUZZ_SEED ?? 13)
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const TARGET = {destination: MANAGER_BUS_NAME, path: MANAGER_OBJECT_PATH}
const METHOD = (member: string) => ({...TARGET, interface: MANAGER_INTERFACE, member})

describe('the install service under fuzzing', {timeout: 240_000}, () => {
  let bus: PrivateBus
  let service: Service
  let pinger: dbus.MessageBus
  const spare: number[] = []
  let fuzz: FuzzClient
  const fdCount = (): number => fuzz.fdCount()
  const alive = (): boolean => fuzz?.alive() ?? false
  const ping = (): Promise<void> => fuzz.ping()
  const send = (spec: Omit<RawMessageSpec, 'serial'>, fds: number[] = []): Promise<number> => fuzz.send(spec, fds)
  const barrier = (): Promise<void> => fuzz.barrier()


  before(async () => {
    bus = await startPrivateBus({uid: NOBODY.uid, gid: NOBODY.gid})
    service = startService(bus.address, ['--idle-timeout', '600', '--cli', CLI, '--policy', '/nonexistent/policy.conf'], MANAGER_MAIN)
    await service.waitForLog(/ready on/)
    pinger = await connectClient(bus.address)
    fuzz = new FuzzClient(bus.address, service, pinger, MANAGER_BUS_NAME)
    for (let i = 0; i < 16; i++) spare.push(openSync('/dev/null', 'r'))
  })
  after(async () => {
    for (const fd of spare) closeSync(fd)
    fuzz?.close()
    pinger?.disconnect()
    if (service && alive()) {
      service.child.kill('SIGTERM')
      await service.exit
    }
    await bus?.stop()
  })

  it('survives everything a client can send, answers Ping, and closes every fd it received', async () => {
    await send({...METHOD('GetStatus'), unixFds: 2}, spare.slice(0, 2))
    await send({...TARGET, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect', unixFds: 1}, spare.slice(0, 1))
    await barrier()
    await ping()
    await sleep(1500)
    const baseline = fdCount()
    const rand = prng(SEED)
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]
    const variant = (): {variant: string; value: RawValue} => pick([{variant: 's', value: 'org.example.App'}, {variant: 'u', value: 0}, {variant: 'as', value: ['a']}, {variant: 'h', value: 3}, {variant: 's', value: 'x'.repeat(100_000)}])
    const shapes: Array<() => [Omit<RawMessageSpec, 'serial'>, number[]]> = [
      () => [{...METHOD(pick(['RequestInstall', 'RequestRemoval'])), signature: 'a{sv}', body: body('a{sv}', [[[pick(['AppId', 'Target', 'Bogus', '']), variant()]]])}, []],
      () => [{...METHOD(pick(['GetStatus', 'RequestInstall', 'RequestRemoval', 'Nope'])), signature: pick(['', 's', 'h', 'a{sv}h', 'ha{sv}']), unixFds: 1, body: body('h', [Math.floor(rand() * 1000)])}, spare.slice(0, 1)],
      () => [{...METHOD('RequestInstall'), signature: 'a{sv}', unixFds: 3, body: body('a{sv}', [[]])}, spare.slice(0, 1)],
      () => [{...METHOD('GetStatus'), unixFds: 16}, spare],
      () => [{...METHOD('RequestInstall'), signature: 'a{sv}', body: body('a{sv}', [Array.from({length: 50_000}, (_, i) => [`K${i}`, {variant: 'u', value: i}])])}, []],
      () => [{...METHOD('RequestInstall'), signature: 'ay', unixFds: 4, body: body('ay', [Buffer.alloc(2 * 1024 * 1024, 1)])}, spare.slice(0, 4)],
      () => [{...METHOD('RequestInstall'), signature: 'a{sv}', body: body('u', [7])}, []],
      () => [{...TARGET, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: pick(['ss', 's']), body: body('ss', [MANAGER_INTERFACE, pick(['Version', '__proto__', 'x'])])}, []],
      () => [{type: pick([2, 3]), destination: MANAGER_BUS_NAME, replySerial: Math.floor(rand() * 10), errorName: 'x.y.Z', signature: 'h', unixFds: 2, body: body('h', [1])}, spare.slice(0, 2)],
      () => [{type: 4, destination: MANAGER_BUS_NAME, path: '/', interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', signature: 'sss', body: body('sss', [':1.1', ':1.1', ''])}, []],
      () => [{...METHOD('GetStatus'), flags: 1, unixFds: 1}, spare.slice(0, 1)],
    ]
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 60; i++) {
        const [spec, fds] = shapes[Math.floor(rand() * shapes.length)]()
        await send(spec, fds)
      }
      for (let i = 0; i < 30; i++) {
        const b = body('a{sv}', [[['AppId', {variant: 's', value: 'org.example.App'}]]])
        for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256)
        await send({...METHOD('RequestInstall'), signature: 'a{sv}', body: b}, [])
      }
      await barrier()
      await ping()
    }
    // Many concurrent callers at once, each with more calls than it may have waiting.
    const clients = await Promise.all(Array.from({length: 40}, () => connectClient(bus.address)))
    await Promise.all(clients.flatMap((c) => [0, 1, 2, 3].map(() => c.call(new dbus.Message({...METHOD('RequestInstall'), signature: 'a{sv}', body: [{}]})).catch(() => undefined))))
    for (const c of clients) c.disconnect()
    fuzz?.close()
    await ping()
    let now = fdCount()
    for (let i = 0; i < 150 && now > baseline; i++) {
      await sleep(100)
      now = fdCount()
    }
    assert.equal(now, baseline, `open fds: ${now}, baseline ${baseline}; service log:\n${service.log().slice(-4000)}`)
    assert.doesNotMatch(service.log(), /^fatal:/m)
    console.log(`# fuzz seed ${SEED}: ${fuzz.reconnects} reconnects; fds ${baseline} -> ${now}`)
  })
})
