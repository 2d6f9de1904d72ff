/**
 * install / uninstall / status / list on real booted hosts: Debian 12 (systemd
 * 252, dbus-daemon, polkit 122) and Debian 13 (systemd 257, dbus-broker, polkit 126).
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, TESTER, bootHost, canRunE2e, ensureRoots, fixturePath} from './lib/hosts.js'

const TEST1 = 'org.sysexthelper.Test1'
const DIES1 = 'org.sysexthelper.Dies1'
const hello = ['busctl', 'call', TEST1, '/org/sysexthelper/Test1', TEST1, 'Hello']

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

/** What "the host as it was" means for these tests: links, stages, state, merged set, mount. */
async function snapshot(host: Host): Promise<string> {
  const r = await host.sh(
    'ls -l /var/lib/extensions /etc/extensions /run/extensions 2>/dev/null | sed "s/.*[0-9] //"; ls /var/lib/sysext-helper/stage 2>/dev/null; ' +
      'cat /var/lib/sysext-helper/state.json 2>/dev/null; cat /usr/.systemd-sysext/extensions 2>/dev/null; ls /usr/share/dbus-1/system-services',
  )
  return r.stdout
}

/** The mount ID of /usr: changes when systemd-sysext unmerges and merges again. */
async function usrMountId(host: Host): Promise<string> {
  const r = await host.execOk('sh', ['-c', "awk '$5 == \"/usr\" {print $1}' /proc/self/mountinfo | tail -1"])
  return r.stdout.trim()
}

async function installJson(host: Host, args: string[], env?: Record<string, string>) {
  const r = await host.cli(['install', ...args, '--json'], {timeout: 180_000, env})
  return {...r, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined}
}

for (const flavor of FLAVORS) {
  describe(`install on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor)
    })
    after(async () => {
      await host?.stop()
    })

    test('install merges the extension; an unprivileged user activates it; polkit knows the action', async () => {
      const r = await installJson(host, [fixturePath('good'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.action, 'install')
      assert.equal(r.json.mode, 'stage')
      assert.equal(r.json.releaseGenerated, true)
      assert.deepEqual(r.json.verification.busNames, [{name: TEST1, ok: true}])
      assert.deepEqual(r.json.verification.polkitActions, [{id: 'org.sysexthelper.test1.hello', ok: true}])
      const merged = await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])
      assert.match(merged.stdout, new RegExp(`^${TEST1}$`, 'm'))
      await host.execOk('systemctl', ['stop', 'sysext-helper-test1.service'])
      const call = await host.exec(hello[0], hello.slice(1), {user: TESTER.name})
      assert.equal(call.exitCode, 0, call.stderr)
      assert.equal(call.stdout.trim(), 's "hello from test1"')
      assert.equal((await host.exec('pkaction', ['--action-id', 'org.sysexthelper.test1.hello'])).exitCode, 0)
    })

    test('re-installing unchanged content is a no-op that does not remount /usr', async () => {
      const before = await usrMountId(host)
      const r = await installJson(host, [fixturePath('good'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stderr)
      assert.equal(r.json.action, 'unchanged')
      assert.equal(r.json.steps.some((s: {step: string}) => s.step === 'refresh'), false)
      assert.equal(await usrMountId(host), before)
    })

    test('list and status report the managed extension as healthy', async () => {
      const list = await host.cli(['list', '--json'])
      assert.equal(list.exitCode, 0, list.stderr)
      const entry = JSON.parse(list.stdout).extensions.find((e: {name: string}) => e.name === TEST1)
      assert.equal(entry.managed, true)
      assert.equal(entry.merged, true)
      const status = await host.cli(['status', TEST1, '--json'])
      assert.equal(status.exitCode, 0, status.stdout)
      assert.equal(JSON.parse(status.stdout).healthy, true)
    })

    test('status exits 1 when the extension is no longer linked; install repairs it', async () => {
      await host.execOk('sh', ['-c', `rm /var/lib/extensions/${TEST1} && systemd-sysext refresh`])
      const status = await host.cli(['status', TEST1, '--json'])
      assert.equal(status.exitCode, 1, status.stdout)
      const report = JSON.parse(status.stdout)
      assert.equal(report.healthy, false)
      assert.equal(report.linkOk, false)
      assert.ok(report.problems.some((p: string) => p.includes(`/var/lib/extensions/${TEST1} does not point to`)), JSON.stringify(report.problems))
      const r = await installJson(host, [fixturePath('good'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal((await host.cli(['status', TEST1])).exitCode, 0)
    })

    test('a service that dies at start fails the install and leaves the host exactly as before', async () => {
      const before = await snapshot(host)
      const r = await installJson(host, [fixturePath('dies'), '--name', DIES1])
      assert.equal(r.exitCode, 1)
      assert.equal(r.json.error.step, 'verify')
      assert.match(r.json.error.message, /did not answer Peer\.Ping/)
      assert.match(r.json.error.message, /rolled back/)
      assert.equal(await snapshot(host), before)
      const call = await host.exec(hello[0], hello.slice(1), {user: TESTER.name})
      assert.equal(call.exitCode, 0, `the previously installed extension must keep working: ${call.stderr}`)
      const dies = await host.exec('busctl', ['call', DIES1, '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      assert.notEqual(dies.exitCode, 0)
    })

    test('changed content updates in place', async () => {
      const r = await installJson(host, [fixturePath('good-v2'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.action, 'update')
      // The v1 service was running (activated by the checks above): install must have stopped it.
      assert.ok(r.json.steps.some((st: {step: string; detail?: string}) => st.step === 'stop' && st.detail === 'sysext-helper-test1.service'), JSON.stringify(r.json.steps))
      const call = await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})
      assert.equal(call.stdout.trim(), 's "hello from test1 v2"')
      const stages = await host.execOk('ls', ['/var/lib/sysext-helper/stage'])
      assert.equal(stages.stdout.trim().split('\n').length, 1, `old stage must be removed: ${stages.stdout}`)
    })

    for (const crashAt of ['stage', 'link', 'refresh', 'reload', 'verify', 'commit']) {
      test(`kill -9 at '${crashAt}' during an update, then a re-run converges`, async () => {
        const target = crashAt === 'verify' || crashAt === 'link' ? 'good' : 'good-v2'
        const other = target === 'good' ? 'good-v2' : 'good'
        // Start from the other version so the crashed run is a real update.
        assert.equal((await installJson(host, [fixturePath(other), '--name', TEST1])).exitCode, 0)
        const crashed = await host.cli(['install', fixturePath(target), '--name', TEST1], {env: {SYSEXT_HELPER_CRASH_AT: crashAt}, timeout: 180_000})
        assert.notEqual(crashed.exitCode, 0, 'the crash hook must kill the run')
        const rerun = await installJson(host, [fixturePath(target), '--name', TEST1])
        assert.equal(rerun.exitCode, 0, rerun.stderr + rerun.stdout)
        assert.ok(['update', 'unchanged', 'repair'].includes(rerun.json.action), rerun.json.action)
        const state = JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout)
        assert.deepEqual(state.pending, {})
        assert.equal(state.extensions[TEST1].hash, rerun.json.hash)
        const stages = (await host.execOk('ls', ['/var/lib/sysext-helper/stage'])).stdout.trim().split('\n')
        assert.deepEqual(stages, [state.extensions[TEST1].linkTarget.split('/').pop()])
        await host.execOk('systemctl', ['stop', 'sysext-helper-test1.service'])
        const call = await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})
        assert.equal(call.stdout.trim(), target === 'good' ? 's "hello from test1"' : 's "hello from test1 v2"')
      })
    }

    test('two concurrent installs are serialized and both succeed', async () => {
      // Two data-only extensions of their own (an extension may not ship files another one ships).
      await host.execOk('sh', ['-c', 'for n in one two; do mkdir -p /srv/concurrent-$n/usr/share/concurrent.$n && echo $n > /srv/concurrent-$n/usr/share/concurrent.$n/README; done'])
      // The first run holds the lock for 3 s at its link step, so the second one must wait for it.
      const first = host.cli(['install', '/srv/concurrent-one', '--name', 'concurrent.one'], {timeout: 180_000, env: {SYSEXT_HELPER_PAUSE_AT: 'link'}})
      await host.sh('for i in $(seq 100); do [ -e /run/sysext-helper.lock ] && exit 0; sleep 0.02; done; exit 1')
      const second = host.cli(['install', '/srv/concurrent-two', '--name', 'concurrent.two'], {timeout: 180_000})
      const [a, b] = await Promise.all([first, second])
      assert.equal(a.exitCode, 0, a.stderr)
      assert.equal(b.exitCode, 0, b.stderr)
      assert.match(b.stderr, /Waiting for another sysext-helper run \(pid \d+\)/)
      const merged = (await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])).stdout
      assert.match(merged, /^concurrent\.one$/m)
      assert.match(merged, /^concurrent\.two$/m)
      for (const name of ['concurrent.one', 'concurrent.two']) assert.equal((await host.cli(['uninstall', name])).exitCode, 0)
    })

    test('uninstall removes everything: not activatable, action gone, no stage, no record', async () => {
      const r = await host.cli(['uninstall', TEST1, '--json'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const ping = await host.exec('busctl', ['call', TEST1, '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      assert.notEqual(ping.exitCode, 0)
      assert.match(ping.stderr, /not provided by any \.service files|not activatable/)
      assert.notEqual((await host.exec('pkaction', ['--action-id', 'org.sysexthelper.test1.hello'])).exitCode, 0)
      assert.equal((await host.exec('ls', ['/var/lib/extensions'])).stdout.trim(), '')
      assert.equal((await host.exec('ls', ['/var/lib/sysext-helper/stage'])).stdout.trim(), '')
      assert.deepEqual(JSON.parse((await host.execOk('cat', ['/var/lib/sysext-helper/state.json'])).stdout).extensions, {})
      assert.equal((await host.exec('systemctl', ['is-active', 'sysext-helper-test1.service'])).stdout.trim(), 'inactive')
    })

    test('uninstall refuses names it does not manage and names the present ones', async () => {
      await host.execOk('sh', ['-c', `mkdir -p /tmp/foreign/usr/lib/extension-release.d && echo ID=_any > /tmp/foreign/usr/lib/extension-release.d/extension-release.foreign && ln -s /tmp/foreign /var/lib/extensions/foreign`])
      const r = await host.cli(['uninstall', 'foreign'])
      assert.equal(r.exitCode, 1)
      assert.match(r.stderr, /foreign is present \(\/var\/lib\/extensions\/foreign\) but not managed by sysext-helper/)
      const list = JSON.parse((await host.cli(['list', '--json'])).stdout)
      assert.deepEqual(list.extensions.map((e: {name: string; managed: boolean}) => [e.name, e.managed]), [['foreign', false]])
      assert.equal((await host.cli(['uninstall', 'foreign', '--force'])).exitCode, 0)
    })
  })
}
