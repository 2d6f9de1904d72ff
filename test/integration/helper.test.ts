/**
 * The monitor helper in test mode: as nobody on a private bus owned by
 * nobody, polkit skipped. A root client passes its output fd and gets a
 * pcap; options are checked strictly; limits, Stop, caller exit and reader
 * hangup end or refuse captures; the audit log names the caller.
 */
import assert from 'node:assert/strict'
import {execFileSync, spawn} from 'node:child_process'
import {closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'
import dbus from 'dbus-next'
import {readPcap} from '../../src/capture/pcap.js'
import {HelperError} from '../../src/errors.js'
import {captureViaHelper} from '../../src/helper/client.js'
import {HELPER_BUS_NAME, HELPER_INTERFACE, HELPER_OBJECT_PATH} from '../../src/helper/constants.js'
import {CLI} from '../lib/fixtures.js'
import {HELPER_MAIN as MAIN, type Service, startService} from '../lib/helper-service.js'
import {NOBODY, type PrivateBus, connectClient, startPrivateBus} from '../lib/private-bus.js'

const EXPECTED_HEADER = Buffer.from('d4c3b2a102000400000000000000000000000008e7000000', 'hex')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function signal(member: string, body: string): dbus.Message {
  return dbus.Message.newSignal('/org/example/Test', 'org.example.Test', member, 's', [body])
}

async function callHelper(client: dbus.MessageBus, member: string, signature: string, body: unknown[]): Promise<dbus.Message | null> {
  return client.call(new dbus.Message({destination: HELPER_BUS_NAME, path: HELPER_OBJECT_PATH, interface: HELPER_INTERFACE, member, signature, body}))
}

describe('the monitor helper in test mode', () => {
  let bus: PrivateBus
  let service: Service
  let dir: string

  before(async () => {
    bus = await startPrivateBus({uid: NOBODY.uid, gid: NOBODY.gid})
    service = startService(bus.address, ['--max-per-uid', '1', '--idle-timeout', '60'])
    await service.waitForLog(/ready on/)
    dir = mkdtempSync(join(tmpdir(), 'sysext-helper-'))
  })
  after(async () => {
    // A service that died early explains the failures: show what it said.
    await sleep(200)
    if (service.child.exitCode !== null || service.child.signalCode !== null) {
      console.error(`# service exited early (${service.child.exitCode ?? service.child.signalCode}); its log:\n${service.log()}`)
    }
    service.child.kill('SIGTERM')
    await service.exit
    await bus.stop()
    rmSync(dir, {recursive: true, force: true})
  })

  it('refuses to run in test mode as root', () => {
    let code = 0
    let stderr = ''
    try {
      execFileSync(process.execPath, [MAIN, '--test-mode', '--address', bus.address], {stdio: ['ignore', 'ignore', 'pipe']})
    } catch (err) {
      code = (err as {status: number}).status
      stderr = String((err as {stderr: Buffer}).stderr)
    }
    assert.equal(code, 1)
    assert.match(stderr, /Refusing to run the monitor helper in test mode as root/)
  })

  it('captures into the fd the caller passed, with the initial state, until the caller stops it', async () => {
    const out = join(dir, 'helper.pcap')
    const sender = await connectClient(bus.address)
    const controller = new AbortController()
    const running = captureViaHelper({address: bus.address, outputFd: openSync(out, 'w'), matchRules: [], initialState: true, signal: controller.signal})
    await service.waitForLog(/capture \d+ start: uid=0 pid=(\d+)/)
    for (let i = 0; i < 50; i++) sender.send(signal('Ping', `via-helper-${i}-end`))
    await sender.call(new dbus.Message({destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId'}))
    await sleep(300)
    controller.abort('signal')
    const summary = await running
    sender.disconnect()

    assert.equal(summary.reason, 'signal')
    assert.equal(summary.dropped, 0)
    assert.ok(summary.initialStateNames >= 1, 'no initial state (the helper owns a well-known name, at least)')
    const file = readPcap(readFileSync(out))
    assert.deepEqual(file.header, EXPECTED_HEADER)
    assert.equal(file.records.length, summary.messages)
    for (let i = 0; i < 50; i++) {
      assert.equal(file.records.filter((r) => r.data.includes(`via-helper-${i}-end\0`)).length, 1, `signal ${i}`)
    }
    assert.ok(file.records.some((r) => r.data.includes('GetNameOwner')), 'no GetNameOwner in the capture')
    // Audit: start and end name the caller's uid and pid.
    const start = await service.waitForLog(new RegExp(`capture \\d+ start: uid=0 pid=${process.pid} `))
    assert.ok(start)
    await service.waitForLog(new RegExp(`capture \\d+ end: uid=0 pid=${process.pid} .*reason=stopped messages=${summary.messages}`))
  })

  it('serves `sysext-helper capture --via-helper`: pcap on stdout, summary on stderr, Ctrl-C stops it', async () => {
    const child = spawn(process.execPath, [CLI, 'capture', '--via-helper', '--address', bus.address, '--output', '-', '--json'], {stdio: ['ignore', 'pipe', 'pipe']})
    const chunks: Buffer[] = []
    let stderr = ''
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', (c: Buffer) => {
        chunks.push(c)
        if (Buffer.concat(chunks).length >= 24) resolve()
      })
    })
    const sender = await connectClient(bus.address)
    sender.send(signal('Ping', 'through-the-cli-end'))
    await sender.call(new dbus.Message({destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId'}))
    sender.disconnect()
    await sleep(300)
    child.kill('SIGINT')
    assert.equal(await exit, 0, stderr)
    const summary = JSON.parse(stderr)
    assert.equal(summary.via, 'helper')
    assert.equal(summary.reason, 'signal')
    const file = readPcap(Buffer.concat(chunks))
    assert.deepEqual(file.header, EXPECTED_HEADER)
    assert.equal(file.records.length, summary.messages)
    assert.equal(file.records.filter((r) => r.data.includes('through-the-cli-end\0')).length, 1)
  })

  it('refuses unknown option keys and wrongly typed values, and lists the supported keys', async () => {
    const client = await connectClient(bus.address, {unixFd: true})
    const fd = openSync('/dev/null', 'w')
    await assert.rejects(callHelper(client, 'Start', 'ha{sv}', [fd, {Bogus: new dbus.Variant('s', 'x')}]), (err: {type: string; text: string}) => {
      assert.equal(err.type, 'org.freedesktop.DBus.Error.InvalidArgs')
      assert.match(err.text, /Unknown option 'Bogus'; supported: MatchRules, Duration, MaxBytes, InitialState, BufferSize, OnOverflow/)
      return true
    })
    await assert.rejects(callHelper(client, 'Start', 'ha{sv}', [fd, {Duration: new dbus.Variant('s', '10')}]), (err: {type: string; text: string}) => {
      assert.equal(err.type, 'org.freedesktop.DBus.Error.InvalidArgs')
      assert.match(err.text, /Duration' must have type 'u'/)
      return true
    })
    await assert.rejects(callHelper(client, 'Start', 'ha{sv}', [fd, {Duration: new dbus.Variant('u', 999_999)}]), (err: {text: string}) => /Duration must be between 1 and 3600/.test(err.text))
    closeSync(fd)
    const props = await client.call(new dbus.Message({destination: HELPER_BUS_NAME, path: HELPER_OBJECT_PATH, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: [HELPER_INTERFACE, 'SupportedOptions']}))
    assert.deepEqual((props!.body[0] as {value: string[]}).value, ['MatchRules', 'Duration', 'MaxBytes', 'InitialState', 'BufferSize', 'OnOverflow'])
    client.disconnect()
    // The client library turns InvalidArgs into a usage error.
    await assert.rejects(
      captureViaHelper({address: bus.address, outputFd: openSync('/dev/null', 'w'), matchRules: [], initialState: true, bufferBytes: 10}),
      (err: HelperError) => err.code === 'CAPTURE_INVALID_OPTIONS' && err.exit === 2,
    )
  })

  it('enforces the per-uid limit, and ends a capture when its caller leaves the bus', async () => {
    const client = await connectClient(bus.address, {unixFd: true})
    const out = join(dir, 'first.pcap')
    const fd = openSync(out, 'w')
    const reply = await callHelper(client, 'Start', 'ha{sv}', [fd, {InitialState: new dbus.Variant('b', false)}])
    closeSync(fd)
    const path = String(reply!.body[0])
    assert.match(path, /^\/io\/github\/sysext_helper\/Monitor1\/capture\/\d+$/)
    const id = path.split('/').pop()
    await assert.rejects(
      captureViaHelper({address: bus.address, outputFd: openSync('/dev/null', 'w'), matchRules: [], initialState: false}),
      (err: HelperError) => err.code === 'CAPTURE_LIMITS' && /limits 1 and 8/.test(err.message),
    )
    // Another caller may not stop it.
    const other = await connectClient(bus.address)
    await assert.rejects(callHelper(other, 'Stop', 'o', [path]), (err: {type: string}) => err.type === 'org.freedesktop.DBus.Error.AccessDenied')
    other.disconnect()
    client.disconnect()
    await service.waitForLog(new RegExp(`capture ${id} end: .*reason=stopped`))
    assert.ok(statSync(out).size >= 24)
  })

  it("ends promptly when the reader of the passed fd goes away", async () => {
    const fifo = join(dir, 'fifo')
    execFileSync('mkfifo', [fifo])
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
    const writer = openSync(fifo, constants.O_WRONLY)
    const running = captureViaHelper({address: bus.address, outputFd: writer, matchRules: [], initialState: false})
    const header = Buffer.alloc(24)
    for (let got = 0; got < 24; ) {
      try {
        got += readSync(reader, header, got, 24 - got, null)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
        await sleep(20)
      }
    }
    assert.deepEqual(header, EXPECTED_HEADER)
    const t0 = Date.now()
    closeSync(reader)
    const summary = await running
    assert.equal(summary.reason, 'reader-gone')
    assert.ok(Date.now() - t0 < 5000, 'the helper did not notice the reader had gone')
  })

  it('reports a missing service as not installed', async () => {
    const empty = await startPrivateBus()
    try {
      await assert.rejects(
        captureViaHelper({address: empty.address, outputFd: openSync('/dev/null', 'w'), matchRules: [], initialState: false}),
        (err: HelperError) => err.code === 'HELPER_NOT_INSTALLED' && err.exit === 1 && /self-install/.test(err.hint ?? ''),
      )
    } finally {
      await empty.stop()
    }
  })

  it('exits by itself when idle', async () => {
    const other = await startPrivateBus({uid: NOBODY.uid, gid: NOBODY.gid})
    try {
      const idle = startService(other.address, ['--idle-timeout', '1'])
      await idle.waitForLog(/ready on/)
      assert.equal(await idle.exit, 0)
      assert.match(idle.log(), /idle: exiting/)
    } finally {
      await other.stop()
    }
  })
})
