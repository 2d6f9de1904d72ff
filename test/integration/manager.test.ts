/**
 * The install service in test mode: as nobody on a private bus, polkit
 * skipped, the real CLI (bin/run.js) behind it. A process that is not a
 * Flatpak app is never an app: GetStatus and an own-app RequestInstall are
 * refused with NotAnApp; naming an AppId goes the install-any way through the
 * CLI's own checks; options and signatures are checked strictly; many
 * concurrent callers are bounded and answered; the interfaces XML shipped in
 * usr/share/dbus-1/interfaces is what the services introspect.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'
import dbus from 'dbus-next'
import {MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_OBJECT_PATH} from '../../src/helper/constants.js'
import {MANAGER_INTROSPECTION} from '../../src/helper/manager.js'
import {INTROSPECTION} from '../../src/helper/service.js'
import {CLI, REPO_ROOT} from '../lib/fixtures.js'
import {MANAGER_MAIN, type Service, startService} from '../lib/helper-service.js'
import {NOBODY, type PrivateBus, connectClient, startPrivateBus} from '../lib/private-bus.js'

const call = (client: dbus.MessageBus, member: string, signature = '', body: unknown[] = []): Promise<dbus.Message | null> =>
  client.call(new dbus.Message({destination: MANAGER_BUS_NAME, path: MANAGER_OBJECT_PATH, interface: MANAGER_INTERFACE, member, signature, body}))

async function errorOf(p: Promise<unknown>): Promise<{type: string; text: string}> {
  try {
    await p
  } catch (err) {
    return {type: String((err as dbus.DBusError).type), text: (err as Error).message}
  }
  throw new Error('the call succeeded')
}

const interfaceBlock = (xml: string): string => xml.slice(xml.indexOf('<interface '), xml.indexOf('</interface>') + 12)

describe('the install service in test mode', {timeout: 120_000}, () => {
  let bus: PrivateBus
  let service: Service
  let client: dbus.MessageBus

  before(async () => {
    bus = await startPrivateBus({uid: NOBODY.uid, gid: NOBODY.gid})
    service = startService(bus.address, ['--idle-timeout', '60', '--cli', CLI, '--policy', '/nonexistent/policy.conf'], MANAGER_MAIN)
    await service.waitForLog(/ready on/)
    client = await connectClient(bus.address)
  })
  after(async () => {
    client?.disconnect()
    service.child.kill('SIGTERM')
    await service.exit
    await bus.stop()
  })

  it('refuses to run in test mode as root', () => {
    let stderr = ''
    try {
      execFileSync(process.execPath, [MANAGER_MAIN, '--test-mode', '--address', bus.address], {stdio: ['ignore', 'ignore', 'pipe']})
    } catch (err) {
      stderr = String((err as {stderr: Buffer}).stderr)
    }
    assert.match(stderr, /Refusing to run the install service in test mode as root/)
  })

  it('a caller that is not a Flatpak app is not an app: GetStatus and an own RequestInstall are refused', async () => {
    const status = await errorOf(call(client, 'GetStatus'))
    assert.equal(status.type, 'io.github.sysext_helper.Manager1.Error.NotAnApp')
    assert.match(status.text, /not a Flatpak app \(identity: (not-flatpak|unreadable)\).*install-any/)
    const install = await errorOf(call(client, 'RequestInstall', 'a{sv}', [{}]))
    assert.equal(install.type, 'io.github.sysext_helper.Manager1.Error.NotAnApp')
    assert.match(service.log(), /GetStatus refused: uid=0 pid=\d+ identity=/)
  })

  it('naming an AppId goes the install-any way, through the CLI and its checks', async () => {
    const e = await errorOf(call(client, 'RequestInstall', 'a{sv}', [{AppId: new dbus.Variant('s', 'org.example.NotInstalled')}]))
    assert.equal(e.type, 'io.github.sysext_helper.Manager1.Error.Failed')
    assert.match(e.text, /org\.example\.NotInstalled/)
  })

  it('checks options and signatures strictly', async () => {
    const cases: Array<[string, string, unknown[], RegExp]> = [
      ['RequestInstall', 'a{sv}', [{Bogus: new dbus.Variant('s', 'x')}], /Unknown option 'Bogus'/],
      ['RequestInstall', 'a{sv}', [{AppId: new dbus.Variant('u', 1)}], /AppId' must have type 's'/],
      ['RequestInstall', 'a{sv}', [{AppId: new dbus.Variant('s', '../../etc')}], /not a Flatpak app id/],
      ['RequestInstall', 'a{sv}', [{Target: new dbus.Variant('s', '/tmp')}], /Target must be/],
      ['RequestInstall', 's', ['x'], /RequestInstall takes \(a\{sv\} options\)/],
      ['RequestRemoval', '', [], /RequestRemoval takes/],
      ['GetStatus', 's', ['x'], /GetStatus takes no arguments/],
    ]
    for (const [member, sig, body, re] of cases) {
      const e = await errorOf(call(client, member, sig, body))
      assert.equal(e.type, 'org.freedesktop.DBus.Error.InvalidArgs', `${member}(${sig})`)
      assert.match(e.text, re)
    }
  })

  it('bounds and answers many concurrent callers, then is back to its fd baseline', async () => {
    const fds = (): number => readdirSync(`/proc/${service.child.pid}/fd`).length
    const baseline = fds()
    const clients = await Promise.all(Array.from({length: 24}, () => connectClient(bus.address)))
    const answers = await Promise.all(clients.flatMap((c) => [0, 1, 2].map(() => errorOf(call(c, 'GetStatus')))))
    const kinds = new Set(answers.map((a) => a.type))
    assert.ok([...kinds].every((k) => /NotAnApp|LimitsExceeded/.test(k)), [...kinds].join(' '))
    for (const c of clients) c.disconnect()
    await client.call(new dbus.Message({destination: MANAGER_BUS_NAME, path: '/', interface: 'org.freedesktop.DBus.Peer', member: 'Ping'}))
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.ok(fds() <= baseline + 1, `fds ${fds()} > baseline ${baseline}`)
  })

  it('introspects what usr/share/dbus-1/interfaces ships, for both services', async () => {
    const dir = join(REPO_ROOT, 'templates/helper/usr/share/dbus-1/interfaces')
    const [intro] = (await client.call(new dbus.Message({destination: MANAGER_BUS_NAME, path: MANAGER_OBJECT_PATH, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect'})))!.body as [string]
    assert.equal(interfaceBlock(intro), interfaceBlock(MANAGER_INTROSPECTION))
    assert.equal(interfaceBlock(readFileSync(join(dir, `${MANAGER_INTERFACE}.xml`), 'utf8')), interfaceBlock(MANAGER_INTROSPECTION))
    assert.equal(interfaceBlock(readFileSync(join(dir, 'io.github.sysext_helper.Monitor1.xml'), 'utf8')), interfaceBlock(INTROSPECTION).replace('${HELPER_INTERFACE}', 'io.github.sysext_helper.Monitor1'))
  })
})
