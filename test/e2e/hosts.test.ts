/**
 * Smoke tests of the e2e harness: each flavor boots, has the expected systemd, bus
 * and polkit, runs node, and a fixture extension merged by hand (the bare commands
 * the CLI wraps) activates for an unprivileged caller and registers its polkit action.
 */
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {bootHost, canRunE2e, copyFixture, ensureRoot, ensureRoots, type Flavor, type Host} from './lib/hosts.js'

const EXPECT: Record<Flavor, {systemd: number; bus: 'dbus-daemon' | 'dbus-broker'; polkit: number}> = {
  debian12: {systemd: 252, bus: 'dbus-daemon', polkit: 122},
  debian13: {systemd: 257, bus: 'dbus-broker', polkit: 126},
}

const can = canRunE2e()
const NAME = 'sysext-helper-test'

// Both roots build at once on a cold cache (the suites then find them ready).
if (can.ok) {
  before(async () => {
    for (const r of await ensureRoots()) {
      if (r.built) console.log(`# ${r.flavor}: built root in ${(r.buildMs! / 1000).toFixed(1)} s`)
    }
  })
}

for (const flavor of ['debian12', 'debian13'] as const) {
  describe(`e2e host ${flavor}`, {skip: can.ok ? false : can.reason}, () => {
    let host: Host
    let t0 = 0

    before(async () => {
      t0 = Date.now()
      await ensureRoot(flavor)
      host = await bootHost(flavor)
      console.log(`# ${flavor}: booted in ${(host.bootMs / 1000).toFixed(2)} s (${host.bootState})`)
    })
    after(async () => {
      await host?.stop()
      console.log(`# ${flavor}: whole suite ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    })

    it('is booted (running or degraded)', async () => {
      const r = await host.exec('systemctl', ['is-system-running'])
      assert.match(r.stdout.trim(), /^(running|degraded)$/)
      if (r.stdout.trim() === 'degraded') {
        const failed = await host.exec('systemctl', ['--failed', '--no-legend'])
        console.log(`# ${flavor} failed units:\n${failed.stdout}`)
      }
    })

    it(`has systemd-sysext ${EXPECT[flavor].systemd}`, async () => {
      const r = await host.execOk('systemd-sysext', ['--version'])
      assert.match(r.stdout, new RegExp(`^systemd ${EXPECT[flavor].systemd} `))
    })

    it(`has a working system bus served by ${EXPECT[flavor].bus}`, async () => {
      const ping = await host.execOk('busctl', ['call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetId'])
      assert.match(ping.stdout, /^s "[0-9a-f]{32}"/)
      const unit = await host.execOk('systemctl', ['show', '-P', 'Id', 'dbus.service'])
      assert.equal(unit.stdout.trim(), EXPECT[flavor].bus === 'dbus-broker' ? 'dbus-broker.service' : 'dbus.service')
      const other = EXPECT[flavor].bus === 'dbus-broker' ? 'dbus-daemon' : 'dbus-broker'
      assert.equal((await host.exec('pgrep', ['-x', EXPECT[flavor].bus])).exitCode, 0)
      // The broker's own process is dbus-broker; dbus-daemon must not run as well.
      assert.notEqual((await host.exec('pgrep', ['-x', other])).exitCode, 0)
    })

    it(`has polkit ${EXPECT[flavor].polkit} active`, async () => {
      const v = await host.execOk('pkaction', ['--version'])
      assert.match(v.stdout, new RegExp(`version ${EXPECT[flavor].polkit}\\b`))
      // polkit is bus-activated, not started at boot: the first query starts it.
      await host.execOk('pkaction', ['--action-id', 'org.freedesktop.policykit.exec'])
      const active = await host.exec('systemctl', ['is-active', 'polkit'])
      assert.equal(active.stdout.trim(), 'active')
    })

    it('has the unprivileged user tester (uid 1000)', async () => {
      const r = await host.execOk('id', [], {user: 'tester'})
      assert.match(r.stdout, /^uid=1000\(tester\) gid=1000\(tester\)/)
    })

    it('runs node and sees the checkout', async () => {
      const r = await host.execOk('node', ['--version'])
      assert.equal(r.stdout.trim(), process.version)
      const cli = await host.cli(['--version'])
      assert.equal(cli.exitCode, 0, cli.stderr)
      assert.match(cli.stdout, /^sysext-helper\//)
    })

    it('merges the good fixture by hand: activation as tester and the polkit action work', async () => {
      const dest = `/var/lib/extensions/${NAME}`
      // Before: neither the service nor the action exists (the negative control).
      const before = await host.exec('busctl', ['call', 'org.sysexthelper.Test1', '/org/sysexthelper/Test1', 'org.sysexthelper.Test1', 'Hello'], {user: 'tester'})
      assert.notEqual(before.exitCode, 0)
      assert.notEqual((await host.exec('pkaction', ['--action-id', 'org.sysexthelper.test1.hello'])).exitCode, 0)

      await copyFixture(host, 'good', dest)
      await host.execOk('sh', ['-ec', `
        mkdir -p ${dest}/usr/lib/extension-release.d
        echo ID=_any > ${dest}/usr/lib/extension-release.d/extension-release.${NAME}
      `])
      await host.execOk('systemd-sysext', ['refresh'])
      const merged = await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])
      assert.match(merged.stdout, new RegExp(`^${NAME}$`, 'm'))
      await host.execOk('systemctl', ['daemon-reload'])
      await host.execOk('busctl', ['call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'ReloadConfig'])

      const hello = await host.execOk('busctl', ['call', 'org.sysexthelper.Test1', '/org/sysexthelper/Test1', 'org.sysexthelper.Test1', 'Hello'], {user: 'tester'})
      assert.equal(hello.stdout.trim(), 's "hello from test1"')
      const unit = await host.execOk('systemctl', ['is-active', 'sysext-helper-test1.service'])
      assert.equal(unit.stdout.trim(), 'active')
      // The policy lets tester call the service but not, e.g., own its name.
      const ping = await host.exec('busctl', ['call', 'org.sysexthelper.Test1', '/', 'org.freedesktop.DBus.Peer', 'Ping'], {user: 'tester'})
      assert.equal(ping.exitCode, 0, ping.stderr)

      await host.execOk('systemctl', ['restart', 'polkit'])
      const action = await host.execOk('pkaction', ['--verbose', '--action-id', 'org.sysexthelper.test1.hello'], {user: 'tester'})
      assert.match(action.stdout, /^org\.sysexthelper\.test1\.hello:/)
      assert.match(action.stdout, /implicit active:\s+auth_admin_keep/)
    })

    it('the dies fixture fails activation; good-v2 replaces good in place', async () => {
      // Runs after the test above: good is merged and its service is running.
      const dies = '/var/lib/extensions/sysext-helper-dies'
      await copyFixture(host, 'dies', dies)
      await host.execOk('sh', ['-ec', `
        mkdir -p ${dies}/usr/lib/extension-release.d
        echo ID=_any > ${dies}/usr/lib/extension-release.d/extension-release.sysext-helper-dies
        systemd-sysext refresh
        systemctl daemon-reload
        busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
      `])
      // dbus-broker fails the call as soon as the unit fails ("startup job failed");
      // dbus-daemon 1.14 only when its service_start_timeout (25 s) expires, so
      // the call's own timeout is kept short here.
      const ping = await host.exec('busctl', ['--timeout=3', 'call', 'org.sysexthelper.Dies1', '/', 'org.freedesktop.DBus.Peer', 'Ping'], {user: 'tester'})
      assert.notEqual(ping.exitCode, 0)
      console.log(`# ${flavor}: Ping of the dies fixture: ${ping.stderr.trim()}`)
      const unit = await host.exec('systemctl', ['is-failed', 'sysext-helper-dies1.service'])
      assert.equal(unit.stdout.trim(), 'failed')

      // good -> good-v2 under the same name. The running service keeps the old code
      // until its unit restarts: an update must restart (or stop) running units.
      const dest = `/var/lib/extensions/${NAME}`
      await copyFixture(host, 'good-v2', `${dest}.new`)
      await host.execOk('sh', ['-ec', `
        cp ${dest}/usr/lib/extension-release.d/extension-release.${NAME} /tmp/release
        rm -rf ${dest} ${dies}
        mv ${dest}.new ${dest}
        mkdir -p ${dest}/usr/lib/extension-release.d
        cp /tmp/release ${dest}/usr/lib/extension-release.d/extension-release.${NAME}
        systemd-sysext refresh
        systemctl daemon-reload
        busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
      `])
      const call = ['call', 'org.sysexthelper.Test1', '/org/sysexthelper/Test1', 'org.sysexthelper.Test1', 'Hello']
      const stale = await host.execOk('busctl', call, {user: 'tester'})
      assert.equal(stale.stdout.trim(), 's "hello from test1"')
      await host.execOk('systemctl', ['restart', 'sysext-helper-test1.service'])
      const fresh = await host.execOk('busctl', call, {user: 'tester'})
      assert.equal(fresh.stdout.trim(), 's "hello from test1 v2"')
    })

    it('gives each boot a clean host', async () => {
      // The overlay is per boot: a second guest has none of the first one's changes.
      const second = await bootHost(flavor)
      try {
        const r = await second.exec('test', ['-e', `/var/lib/extensions/${NAME}`])
        assert.notEqual(r.exitCode, 0)
      } finally {
        await second.stop()
      }
    })
  })
}
