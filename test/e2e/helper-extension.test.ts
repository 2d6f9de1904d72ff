/**
 * The helper extension on hosts without Node.js: installed with the node it
 * ships, it puts `sysext-helper` on the host's PATH, manages itself (list,
 * self-install, uninstall), and comes back at boot once systemd-sysext.service
 * is enabled. Debian 12 (systemd 252, dbus-daemon) and 13 (systemd 257, dbus-broker).
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, REPO_ROOT, bootHost, canRunE2e, ensureRoots} from './lib/hosts.js'
import {builtExtension, copyExtensionInto} from './lib/extension.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)

builtExtension()
await ensureRoots()

const TREE = '/srv/sysext-helper-ext'
const NODE = `${TREE}/usr/lib/sysext-helper/node`
const BUNDLE = `${TREE}/usr/lib/sysext-helper/cli.js`
const VERSION = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version as string

for (const flavor of FLAVORS) {
  describe(`helper extension on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    const json = async (cmd: string, args: string[]) => {
      const r = await host.exec(cmd, [...args, '--json'], {timeout: 180_000})
      return {...r, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined}
    }
    before(async () => {
      host = await bootHost(flavor, {noNode: true})
      copyExtensionInto(host, TREE)
    })
    after(async () => {
      await host?.stop()
    })

    test('the host has no node', async () => {
      assert.notEqual((await host.sh('command -v node')).exitCode, 0)
      assert.notEqual((await host.exec('test', ['-e', '/opt/sysext-helper-node/bin/node'])).exitCode, 0)
    })

    test('installed with its own node (--target persistent): merged, in place, verified', async () => {
      const r = await json(NODE, [BUNDLE, 'install', TREE, '--name', 'sysext-helper', '--target', 'persistent', '--allow', 'commands', '--allow', 'boot-units', '--allow', 'flatpak-triggers'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.action, 'install')
      assert.equal(r.json.mode, 'in-place')
      assert.equal(r.json.link, '/etc/extensions/sysext-helper')
      assert.equal(r.json.linkTarget, TREE)
      assert.equal(r.json.releaseGenerated, false)
      assert.equal(r.json.verification.merged, true)
      assert.match((await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])).stdout, /^sysext-helper$/m)
    })

    test('sysext-helper is on the PATH and runs while node is not', async () => {
      assert.notEqual((await host.sh('command -v node')).exitCode, 0)
      assert.equal((await host.execOk('sh', ['-c', 'command -v sysext-helper'])).stdout.trim(), '/usr/bin/sysext-helper')
      const v = await host.execOk('/usr/bin/sysext-helper', ['--version'])
      assert.match(v.stdout, new RegExp(`^sysext-helper/${VERSION.replace(/\./g, '\\.')} linux-`))
      const list = await json('sysext-helper', ['list'])
      assert.equal(list.exitCode, 0, list.stderr)
      const me = list.json.extensions.find((e: {name: string}) => e.name === 'sysext-helper')
      assert.equal(me.managed, true)
      assert.equal(me.merged, true)
      assert.equal(me.target, 'persistent')
    })

    test('the templates arrived: the Flatpak trigger is executable in /usr', async () => {
      const templates = spawnSync('find', [join(REPO_ROOT, 'templates'), '-path', '*/usr/*', '-type', 'f', '-printf', '%P\\n'], {encoding: 'utf8'})
      for (const rel of templates.stdout.split('\n').filter(Boolean)) {
        const path = `/${rel.slice(rel.indexOf('usr/'))}`
        assert.equal((await host.exec('test', ['-e', path])).exitCode, 0, `${path} is merged`)
      }
      const trigger = '/usr/share/flatpak/triggers/sysext-helper.trigger'
      if ((await host.exec('test', ['-e', trigger])).exitCode === 0) assert.equal((await host.exec('test', ['-x', trigger])).exitCode, 0)
    })

    test('self-install from the merged /usr is a no-op that keeps the target', async () => {
      const r = await json('/usr/bin/sysext-helper', ['self-install'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.action, 'unchanged')
      assert.equal(r.json.target, 'persistent')
      assert.equal(r.json.linkTarget, TREE)
    })

    test('export NAME writes the installed tree as a tarball: usr/ on top, root-owned', async () => {
      const r = await json('sysext-helper', ['export', 'sysext-helper', '--output', '/var/tmp/sysext-helper.tar'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.source.kind, 'managed')
      assert.equal(r.json.source.tree, TREE)
      const list = await host.execOk('tar', ['-tvf', '/var/tmp/sysext-helper.tar', '--numeric-owner'])
      const lines = list.stdout.trim().split('\n')
      assert.match(lines[0]!, / usr\/$/)
      assert.ok(lines.every((l) => /^\S+ 0\/0 .* usr\//.test(l)), list.stdout)
      assert.match(list.stdout, /^-rwxr-xr-x 0\/0 .* usr\/bin\/sysext-helper$/m)
    })

    test('systemctl enable systemd-sysext.service: doctor then sees it enabled for boot', async () => {
      await host.execOk('systemctl', ['enable', 'systemd-sysext.service'])
      assert.equal((await host.exec('systemctl', ['is-enabled', 'systemd-sysext.service'])).stdout.trim(), 'enabled')
      const doctor = await json('sysext-helper', ['doctor'])
      assert.equal(doctor.exitCode, 0, doctor.stderr + doctor.stdout)
      const boot = doctor.json.checks.find((c: {id: string}) => c.id === 'sysext-boot')
      assert.equal(boot.ok, true, JSON.stringify(boot))
    })

    test('what boot runs (systemd-sysext.service) merges it again after an unmerge', async () => {
      await host.execOk('systemd-sysext', ['unmerge'])
      assert.notEqual((await host.exec('test', ['-e', '/usr/bin/sysext-helper'])).exitCode, 0)
      await host.execOk('systemctl', ['restart', 'systemd-sysext.service'])
      assert.equal((await host.execOk('/usr/bin/sysext-helper', ['--version'])).exitCode, 0)
      const status = await json('sysext-helper', ['status', 'sysext-helper'])
      assert.equal(status.json.linkOk, true, status.stdout)
    })

    test('sysext-helper uninstalls itself: unmerged, link gone, command gone', async () => {
      const r = await json('/usr/bin/sysext-helper', ['uninstall', 'sysext-helper'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.deepEqual(r.json.removed, ['/etc/extensions/sysext-helper'])
      assert.notEqual((await host.exec('test', ['-e', '/etc/extensions/sysext-helper'])).exitCode, 0)
      assert.notEqual((await host.exec('test', ['-e', '/usr/bin/sysext-helper'])).exitCode, 0)
      const merged = await host.exec('cat', ['/usr/.systemd-sysext/extensions'])
      assert.doesNotMatch(merged.stdout, /^sysext-helper$/m)
    })

    test('self-install from the unmerged tree installs that tree', async () => {
      const r = await json(NODE, [BUNDLE, 'self-install', '--target', 'runtime'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      assert.equal(r.json.action, 'install')
      assert.equal(r.json.link, '/run/extensions/sysext-helper')
      // self-install merges a staged copy: the tree it runs from may be rebuilt or replaced later.
      assert.equal(r.json.mode, 'stage')
      assert.match(r.json.linkTarget, /^\/var\/lib\/sysext-helper\/stage\/sysext-helper-/)
      assert.equal((await host.execOk('/usr/bin/sysext-helper', ['--version'])).exitCode, 0)
      const u = await json('sysext-helper', ['uninstall', 'sysext-helper'])
      assert.equal(u.exitCode, 0, u.stderr + u.stdout)
    })

    test('the tarball, unpacked as importctl import-tar --class=sysext does, merges and runs', async () => {
      // importctl extracts with tar --numeric-owner -xp into /var/lib/extensions/NAME (importctl itself is not in these hosts).
      await host.execOk('sh', ['-ec', 'mkdir -p /var/lib/extensions/sysext-helper; tar --numeric-owner -xpf /var/tmp/sysext-helper.tar -C /var/lib/extensions/sysext-helper; systemd-sysext refresh'])
      assert.equal((await host.execOk('/usr/bin/sysext-helper', ['--version'])).exitCode, 0)
      assert.match((await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])).stdout, /^sysext-helper$/m)
      await host.execOk('sh', ['-ec', 'rm -rf /var/lib/extensions/sysext-helper; systemd-sysext refresh'])
    })
  })
}
