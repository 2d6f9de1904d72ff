/**
 * sysext-helper installed the way the README's first route says: `npm install -g`
 * of the package, then `sysext-helper self-install`, on booted Debian 12 and 13
 * hosts. No build step: the tree is assembled from the package's bundles and the
 * node running it, merged, and from then on the host has /usr/bin/sysext-helper
 * and the monitor service without the npm copy.
 */
import assert from 'node:assert/strict'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, GUEST_NODE, type Host, bootHost, canRunE2e, ensureRoots} from './lib/hosts.js'
import {installGlobally, packedTarball} from '../lib/package.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()
const tarball = packedTarball()

// Outside /usr and /opt: a merge on systemd 257 lays a tmpfs over /opt when it has submounts.
const PREFIX = '/srv/npm-global'
const INSTALLED = `${PREFIX}/lib/node_modules/sysext-helper/bin/sysext-helper.js`

for (const flavor of FLAVORS) {
  describe(`npm-installed sysext-helper on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor)
      installGlobally(tarball, join(host.root, PREFIX))
    })
    after(async () => {
      await host?.stop()
    })

    test('self-install from the npm install merges sysext-helper; its command and monitor service work without the npm copy', async () => {
      const r = await host.exec(GUEST_NODE, [INSTALLED, 'self-install', '--json'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const result = JSON.parse(r.stdout)
      assert.equal(result.name, 'sysext-helper')
      assert.equal(result.mode, 'stage')
      assert.deepEqual(result.verification.busNames, [{name: 'io.github.sysext_helper.Manager1', ok: true}, {name: 'io.github.sysext_helper.Monitor1', ok: true}])
      // The assembled tree was a temporary: the merged one is the stage.
      assert.notEqual((await host.sh(`test -e ${result.source.path}`)).exitCode, 0)
      await host.execOk('rm', ['-rf', PREFIX])
      assert.match((await host.execOk('/usr/bin/sysext-helper', ['--version'])).stdout, /^sysext-helper\//)
      const list = JSON.parse((await host.execOk('/usr/bin/sysext-helper', ['list', '--json'])).stdout)
      assert.deepEqual(list.extensions.find((e: {name: string}) => e.name === 'sysext-helper')?.allow, ['commands', 'boot-units', 'flatpak-triggers'])
      await host.execOk('busctl', ['call', 'io.github.sysext_helper.Monitor1', '/', 'org.freedesktop.DBus.Peer', 'Ping'])
    })
  })
}
