/**
 * Flatpak integration on real booted hosts with real flatpak: sysext-helper
 * itself installed from its self-contained extension (no Node on the host), an
 * offline repo with an app whose lib/extensions has no release file (as
 * Sysprof's has none), and the trigger driving sync on install, update, uninstall.
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, REPO_ROOT, TESTER, bootHost, canRunE2e, ensureRoots, fixturePath} from './lib/hosts.js'
import {builtExtension, copyExtensionInto} from './lib/extension.js'

const APP = 'org.sysexthelper.App'
const BUS_NAME = 'org.sysexthelper.Test1'
const GUEST_EXT = '/srv/sysext-helper-extension'
const PUBLISH = `${REPO_ROOT}/test/fixtures/e2e/flatpak/publish-app.sh`
const hello = ['busctl', 'call', BUS_NAME, '/org/sysexthelper/Test1', BUS_NAME, 'Hello']

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

// The self-contained extension, built once for both hosts.
builtExtension()

/** Polls `probe` every 250 ms until it returns true or `seconds` pass. */
async function eventually(seconds: number, probe: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    if (await probe()) return true
    await new Promise((r) => setTimeout(r, 250))
  }
  return false
}

/** The sync unit has finished its run (state is written at its very end). */
async function syncIdle(host: Host): Promise<boolean> {
  return eventually(60, async () => {
    const state = (await host.sh('systemctl show -p ActiveState --value sysext-helper-sync.service; systemctl list-jobs --no-legend sysext-helper-sync.service')).stdout.trim()
    return state === 'inactive' || state === 'failed'
  })
}

async function merged(host: Host): Promise<string[]> {
  return (await host.sh('cat /usr/.systemd-sysext/extensions 2>/dev/null')).stdout.split('\n').filter(Boolean)
}

for (const flavor of FLAVORS) {
  describe(`Flatpak integration on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor, {noNode: true})
      copyExtensionInto(host, GUEST_EXT)
    })
    after(async () => {
      await host?.stop()
    })

    test('sysext-helper installs itself from its extension on a host without Node', async () => {
      assert.notEqual((await host.sh('command -v node')).exitCode, 0, 'the host must not have node')
      // Before the merge only the tree's own node can run its CLI (usr/bin/sysext-helper points into the merged /usr).
      const r = await host.exec(`${GUEST_EXT}/usr/lib/sysext-helper/node`, [`${GUEST_EXT}/usr/lib/sysext-helper/cli.js`, 'self-install', '--target', 'persistent', '--json'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.ok((await merged(host)).includes('sysext-helper'))
      assert.match((await host.execOk('/usr/bin/sysext-helper', ['--version'])).stdout, /^sysext-helper\//)
      assert.equal((await host.exec('test', ['-x', '/usr/share/flatpak/triggers/sysext-helper.trigger'])).exitCode, 0)
    })

    test('flatpak install of an app with an extension merges nothing without approval, and says so', async () => {
      await host.execOk(PUBLISH, [fixturePath('good')], {timeout: 300_000})
      await host.execOk('flatpak', ['install', '--system', '-y', '--noninteractive', 'local', APP], {timeout: 300_000})
      // The trigger started the sync unit; wait for it to have run.
      assert.ok(await eventually(30, async () => (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager | grep -q "not approved"')).exitCode === 0),
        (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager')).stdout)
      assert.ok(!(await merged(host)).includes(APP))
      const list = JSON.parse((await host.execOk('/usr/bin/sysext-helper', ['list', '--json'])).stdout)
      assert.deepEqual(list.unapprovedApps.map((a: {appId: string}) => a.appId), [APP])
      assert.notEqual((await host.exec(hello[0], hello.slice(1), {user: TESTER.name})).exitCode, 0)
    })

    test('install APP-ID approves it: merged, and an unprivileged call activates the service', async () => {
      const r = await host.exec('/usr/bin/sysext-helper', ['install', APP, '--json'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const result = JSON.parse(r.stdout)
      assert.equal(result.mode, 'stage')
      assert.equal(result.releaseGenerated, true)
      const call = await host.exec(hello[0], hello.slice(1), {user: TESTER.name})
      assert.equal(call.stdout.trim(), 's "hello from test1"', call.stderr)
    })

    test('flatpak update to a new version updates the merged content by itself', async () => {
      await host.execOk(PUBLISH, [fixturePath('good-v2')], {timeout: 300_000})
      await host.execOk('flatpak', ['update', '--system', '-y', '--noninteractive', APP], {timeout: 300_000})
      const updated = await eventually(30, async () => {
        const call = await host.exec(hello[0], hello.slice(1), {user: TESTER.name})
        return call.stdout.trim() === 's "hello from test1 v2"'
      })
      assert.ok(updated, (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager | tail -20')).stdout)
      assert.ok(await syncIdle(host))
      const state = JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout)
      const deploy = (await host.execOk('readlink', ['-f', `/var/lib/flatpak/app/${APP}/current/active`])).stdout.trim()
      assert.equal(state.extensions[APP].source.commit, deploy.split('/').pop())
      // The merged tree is a stage, never the deploy flatpak may delete.
      assert.match(state.extensions[APP].linkTarget, /^\/var\/lib\/sysext-helper\/stage\//)
    })

    test('an update that adds something outside what was approved is refused; the previous version stays merged', async () => {
      const before = JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout).extensions[APP]
      // v3: v2 plus a generator (runs as root at every daemon-reload) and a command on root's PATH.
      await host.execOk('sh', ['-ec', `rm -rf /var/tmp/evil-v3; cp -r ${fixturePath('good-v2')} /var/tmp/evil-v3
        mkdir -p /var/tmp/evil-v3/usr/lib/systemd/system-generators /var/tmp/evil-v3/usr/sbin
        printf '#!/bin/sh\\ntouch /run/pwned-generator\\n' > /var/tmp/evil-v3/usr/lib/systemd/system-generators/evil
        printf '#!/bin/sh\\ntouch /run/pwned-path\\n' > /var/tmp/evil-v3/usr/sbin/ls
        chmod 755 /var/tmp/evil-v3/usr/lib/systemd/system-generators/evil /var/tmp/evil-v3/usr/sbin/ls`])
      await host.execOk(PUBLISH, ['/var/tmp/evil-v3'], {timeout: 300_000})
      await host.execOk('flatpak', ['update', '--system', '-y', '--noninteractive', APP], {timeout: 300_000})
      const refused = await eventually(30, async () => (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager | grep -q "confine-"')).exitCode === 0)
      const journal = (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager | tail -30')).stdout
      assert.ok(refused, journal)
      assert.ok(await syncIdle(host))
      const after = JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout).extensions[APP]
      assert.equal(after.hash, before.hash, 'the merged content is still the approved v2')
      assert.equal(after.linkTarget, before.linkTarget)
      assert.equal((await host.exec(hello[0], hello.slice(1), {user: TESTER.name})).stdout.trim(), 's "hello from test1 v2"')
      await host.execOk('systemctl', ['daemon-reload'])
      await host.execOk('ls', ['/'])
      assert.equal((await host.sh('test ! -e /usr/lib/systemd/system-generators/evil && test ! -e /usr/sbin/ls && test ! -e /run/pwned-generator && test ! -e /run/pwned-path')).exitCode, 0)
      // status names the refusal's way out: the app is approved without the extras it now wants.
      assert.equal((await host.exec('/usr/bin/sysext-helper', ['status', APP])).exitCode, 0)
    })

    test('flatpak uninstall removes the extension by itself', async () => {
      await host.execOk('flatpak', ['uninstall', '--system', '-y', '--noninteractive', APP], {timeout: 300_000})
      assert.ok(await eventually(30, async () => !(await merged(host)).includes(APP)), (await host.sh('journalctl -b -u sysext-helper-sync.service --no-pager | tail -20')).stdout)
      assert.ok(await syncIdle(host))
      const ping = await host.exec('busctl', ['call', BUS_NAME, '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      assert.notEqual(ping.exitCode, 0)
      const state = JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout)
      assert.equal(state.extensions[APP], undefined)
      assert.ok(state.extensions['sysext-helper'], 'sysext-helper itself stays installed')
    })
  })
}
