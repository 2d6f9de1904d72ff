/**
 * Issue 12: apt keeps working while the self-contained sysext-helper extension and a test
 * extension are merged. Debian 12 (systemd 252): the apt hooks unmerge and merge again;
 * Debian 13 (systemd 257): the mutable mode. Plain-copy roots (an overlay-rooted guest's
 * /usr cannot be an overlay upper layer). `hello` comes from this machine's apt cache and
 * is served from a local file: repo, so no network is needed.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, TESTER, bootHost, canRunE2e, copyFixture, ensureRoots} from './lib/hosts.js'
import {downloaded} from './lib/debian-packages.js'
import {builtExtension, copyExtensionInto} from './lib/extension.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)

builtExtension()
await ensureRoots()
const HELLO = downloaded('hello')

const TREE = '/srv/sysext-helper-ext'
const NODE = `${TREE}/usr/lib/sysext-helper/node`
const BUNDLE = `${TREE}/usr/lib/sysext-helper/cli.js`
const TEST1 = 'org.sysexthelper.Test1'
const MONITOR = 'io.github.sysext_helper.Monitor1'
const REPO = '/srv/apt-repo'

/** A local apt repository holding hello and a package whose postinst fails. */
const REPO_SETUP = `set -eu
mkdir -p ${REPO} /tmp/fails/DEBIAN
cp /var/tmp/hello.deb ${REPO}/
cat > /tmp/fails/DEBIAN/control <<EOF
Package: sysext-e2e-fails
Version: 1.0
Architecture: all
Maintainer: e2e <e2e@example.org>
Description: postinst fails on purpose
EOF
# It also records who holds sysext-helper's lock while dpkg runs (the hook takes it for the package manager).
printf '#!/bin/sh\\nl=$(cat /run/sysext-helper.lock 2>/dev/null) && echo "$l $(cat /proc/\${l%%%% *}/comm)" > /var/tmp/lock-during-dpkg\\necho failing on purpose >&2\\nexit 1\\n' > /tmp/fails/DEBIAN/postinst
chmod 755 /tmp/fails/DEBIAN/postinst
dpkg-deb --build /tmp/fails ${REPO}/fails.deb >/dev/null
cd ${REPO}
: > Packages
for deb in *.deb; do
  dpkg-deb -f "$deb" >> Packages
  printf 'Filename: ./%s\\nSize: %s\\nSHA256: %s\\n\\n' "$deb" "$(stat -c %s "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)" >> Packages
done
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:${REPO} ./" > /etc/apt/sources.list
apt-get update -qq
`

for (const flavor of FLAVORS) {
  const mutable = flavor === 'debian13'
  describe(`package managers on ${flavor} (${mutable ? 'mutable merge' : 'apt hooks'})`, {concurrency: false}, () => {
    let host: Host
    const cli = async (args: string[]) => {
      const r = await host.exec('/usr/bin/sysext-helper', [...args, '--json'], {timeout: 180_000})
      return {...r, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined}
    }
    const apt = (args: string[]) => host.exec('apt-get', ['-y', '-q', ...args], {timeout: 300_000, env: {DEBIAN_FRONTEND: 'noninteractive'}})
    const merged = async () => (await host.exec('cat', ['/usr/.systemd-sysext/extensions'])).stdout.split('\n').filter(Boolean).sort()
    const usrMount = async () => (await host.execOk('sh', ['-c', "awk '$5 == \"/usr\"' /proc/self/mountinfo | tail -1"])).stdout
    const answering = async () => {
      assert.deepEqual(await merged(), [TEST1, 'sysext-helper'].sort())
      const hello = await host.exec('busctl', ['call', TEST1, '/org/sysexthelper/Test1', TEST1, 'Hello'], {user: TESTER.name})
      assert.equal(hello.exitCode, 0, hello.stderr)
      assert.equal(hello.stdout.trim(), 's "hello from test1"')
      const ping = await host.exec('busctl', ['call', MONITOR, '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      assert.equal(ping.exitCode, 0, ping.stderr)
    }

    before(async () => {
      host = await bootHost(flavor, {plainRoot: true})
      copyExtensionInto(host, TREE)
      execFileSync('cp', [HELLO, `${host.root}/var/tmp/hello.deb`])
      await host.execOk('sh', ['-c', REPO_SETUP], {timeout: 120_000})
    })
    after(async () => {
      await host?.stop()
    })

    test('self-install sets up the mechanism for this systemd; install of a test extension keeps it', async () => {
      const self = await host.exec(NODE, [BUNDLE, 'self-install', '--target', 'persistent', '--json'], {timeout: 180_000})
      assert.equal(self.exitCode, 0, self.stderr + self.stdout)
      const good = await copyFixture(host, 'good')
      const r = await cli(['install', good, '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      await answering()
      const status = await cli(['package-managers'])
      assert.equal(status.exitCode, 0, status.stderr)
      assert.equal(status.json.mode, mutable ? 'mutable' : 'hooks')
      assert.ok(status.json.files.every((f: {state: string}) => f.state === 'ok'), JSON.stringify(status.json.files))
      if (mutable) {
        assert.match(await usrMount(), /upperdir=\/usr/)
        assert.equal((await host.exec('test', ['-e', '/etc/apt/apt.conf.d/05sysext-helper'])).exitCode, 1)
        assert.equal((await host.execOk('readlink', ['/var/lib/extensions.mutable/usr'])).stdout.trim(), '/usr')
      } else {
        assert.doesNotMatch(await usrMount(), /upperdir=/)
        assert.match((await host.execOk('cat', ['/etc/apt/apt.conf.d/05sysext-helper'])).stdout, /DPkg::Pre-Invoke/)
      }
      const doctor = await cli(['doctor'])
      const ids = Object.fromEntries(doctor.json.checks.map((c: {id: string; ok: boolean; message: string}) => [c.id, c]))
      assert.equal(ids['package-managers'].ok, true, ids['package-managers'].message)
      assert.equal(ids['package-manager-files'].ok, true, ids['package-manager-files'].message)
      if (mutable) {
        assert.equal(ids['mutable-merge'].ok, true)
        assert.equal(ids['upper-shadows'].ok, true, ids['upper-shadows'].message)
      }
    })

    test('apt-get install, --reinstall and remove all exit 0; dpkg --audit is clean; both extensions merged and answering', async () => {
      const started = Date.now()
      const install = await apt(['install', 'hello'])
      assert.equal(install.exitCode, 0, install.stdout + install.stderr)
      assert.equal((await host.exec('/usr/bin/hello')).exitCode, 0)
      await answering()
      const reinstall = await apt(['install', '--reinstall', 'hello'])
      assert.equal(reinstall.exitCode, 0, reinstall.stdout + reinstall.stderr)
      await answering()
      const remove = await apt(['remove', 'hello'])
      assert.equal(remove.exitCode, 0, remove.stdout + remove.stderr)
      assert.notEqual((await host.exec('test', ['-e', '/usr/bin/hello'])).exitCode, 0)
      const audit = await host.exec('dpkg', ['--audit'])
      assert.equal(audit.stdout + audit.stderr, '')
      await answering()
      console.log(`# ${flavor}: install + reinstall + remove of hello with both extensions merged: ${Date.now() - started} ms`)
    })

    test('timing: the hooks cost little (figures in the test log)', async () => {
      const timed = async (args: string[]) => {
        const t = Date.now()
        await host.execOk('apt-get', ['-y', '-q', ...args], {env: {DEBIAN_FRONTEND: 'noninteractive'}, timeout: 120_000})
        return Date.now() - t
      }
      await timed(['install', 'hello'])
      const noop = [await timed(['install', 'hello']), await timed(['install', 'hello'])]
      const withHooks = [await timed(['install', '--reinstall', 'hello']), await timed(['install', '--reinstall', 'hello'])]
      // The same runs with nothing merged and no integration: plain apt.
      await host.execOk('sh', ['-c', 'mkdir -p /root/pm-off && mv /etc/apt/apt.conf.d/05sysext-helper /root/pm-off/ 2>/dev/null; systemd-sysext unmerge'])
      const bare = [await timed(['install', 'hello']), await timed(['install', '--reinstall', 'hello']), await timed(['install', '--reinstall', 'hello'])]
      await host.execOk('sh', ['-c', `mv /root/pm-off/* /etc/apt/apt.conf.d/ 2>/dev/null; systemd-sysext refresh${mutable ? ' --mutable=auto' : ''}`])
      await host.execOk('/usr/bin/sysext-helper', ['package-managers', '--reload'], {timeout: 120_000})
      console.log(`# ${flavor}: apt-get install of an installed package (dpkg not run): ${noop.join(', ')} ms merged with the integration; ${bare[0]} ms unmerged without it`)
      console.log(`# ${flavor}: apt-get install --reinstall hello: ${withHooks.join(', ')} ms merged with the integration; ${bare.slice(1).join(', ')} ms unmerged without it`)
      await apt(['remove', 'hello'])
      await answering()
    })

    if (mutable) {
      test('installed package files are in the real /usr: they survive an unmerge', async () => {
        await host.execOk('apt-get', ['-y', '-q', 'install', 'hello'], {env: {DEBIAN_FRONTEND: 'noninteractive'}, timeout: 120_000})
        await host.execOk('systemd-sysext', ['unmerge'])
        assert.equal((await host.exec('/usr/bin/hello')).exitCode, 0)
        await host.execOk('systemd-sysext', ['refresh', '--mutable=auto'])
        await host.execOk('/usr/bin/sysext-helper', ['package-managers', '--reload'], {timeout: 120_000})
        await answering()
      })

      test('update, uninstall and sync by sysext-helper keep the mutable mode; the boot-time service too', async () => {
        const v2 = await copyFixture(host, 'good-v2')
        const update = await cli(['install', v2, '--name', TEST1])
        assert.equal(update.exitCode, 0, update.stderr + update.stdout)
        assert.match(await usrMount(), /upperdir=\/usr/)
        const good = await copyFixture(host, 'good')
        const back = await cli(['install', good, '--name', TEST1])
        assert.equal(back.exitCode, 0, back.stderr + back.stdout)
        assert.match(await usrMount(), /upperdir=\/usr/)
        const other = '/var/tmp/fixtures/other'
        await host.execOk('sh', ['-c', `mkdir -p ${other}/usr/share/other && echo x > ${other}/usr/share/other/x`])
        const add = await cli(['install', other, '--name', 'other'])
        assert.equal(add.exitCode, 0, add.stderr + add.stdout)
        assert.match(await usrMount(), /upperdir=\/usr/)
        const un = await cli(['uninstall', 'other'])
        assert.equal(un.exitCode, 0, un.stderr + un.stdout)
        assert.match(await usrMount(), /upperdir=\/usr/)
        assert.equal((await cli(['sync'])).exitCode, 0)
        await host.execOk('systemctl', ['restart', 'systemd-sysext.service'], {timeout: 120_000})
        assert.match(await usrMount(), /upperdir=\/usr/)
        await host.execOk('/usr/bin/sysext-helper', ['package-managers', '--reload'], {timeout: 120_000})
        await answering()
      })

      test('doctor finds a copy-up of an extension file in the real /usr, and its fix removes it', async () => {
        const file = `/usr/lib/extension-release.d/extension-release.${TEST1}`
        await host.execOk('touch', [file])
        const doctor = await cli(['doctor'])
        const shadows = doctor.json.checks.find((c: {id: string}) => c.id === 'upper-shadows')
        assert.equal(shadows.ok, false, shadows.message)
        assert.match(shadows.message, new RegExp(file.replace(/\./g, '\\.')))
        await host.execOk('sh', ['-c', shadows.fix], {timeout: 120_000})
        const again = await cli(['doctor'])
        assert.equal(again.json.checks.find((c: {id: string}) => c.id === 'upper-shadows').ok, true)
        await host.execOk('/usr/bin/sysext-helper', ['package-managers', '--reload'], {timeout: 120_000})
        await answering()
      })
    } else {
      test('a package manager that dies after the pre hook: the armed unit merges again', async () => {
        // A parent that is not a shell (the hook skips shells to find the package manager) and ends without the post hook.
        await host.execOk('python3', ['-c', "import subprocess; subprocess.run(['/etc/sysext-helper/package-manager-hook', 'pre'], check=True)"])
        let seen: string[] = []
        for (let i = 0; i < 30 && seen.length < 2; i++) {
          await new Promise((r) => setTimeout(r, 500))
          seen = await merged()
        }
        await host.execOk('sh', ['-c', 'for i in $(seq 50); do [ -e /run/sysext-helper/package-manager.unmerged ] || exit 0; sleep 0.2; done; exit 1'])
        await answering()
      })
    }

    test('an apt run that fails midway (a postinst exits 1) still leaves the extensions merged and answering', async () => {
      const r = await apt(['install', 'sysext-e2e-fails'])
      assert.notEqual(r.exitCode, 0, r.stdout)
      assert.match(r.stdout + r.stderr, /failing on purpose/)
      await answering()
      const during = (await host.exec('cat', ['/var/tmp/lock-during-dpkg'])).stdout.trim()
      if (mutable) assert.equal(during, '', 'no hook, no lock: /usr stays writable')
      else {
        // Held in the package manager's name ("PID START"), so an install or sync waits for the run to end.
        assert.match(during, /^\d+ \d+ apt-get$/, `lock holder while dpkg ran: '${during}'`)
      }
      assert.equal((await host.exec('test', ['-e', '/run/sysext-helper.lock'])).exitCode, 1, 'the lock is released after the run')
      await host.execOk('dpkg', ['--purge', '--force-all', 'sysext-e2e-fails'], {timeout: 120_000})
      await answering()
    })

    test('uninstall sysext-helper removes the integration', async () => {
      const r = await cli(['uninstall', 'sysext-helper'])
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      for (const path of ['/etc/apt/apt.conf.d/05sysext-helper', '/etc/sysext-helper/package-manager-hook', '/var/lib/extensions.mutable/usr', '/etc/systemd/system/systemd-sysext.service.d/sysext-helper-mutable.conf'])
        assert.equal((await host.exec('test', ['-e', path])).exitCode, 1, `${path} removed`)
    })
  })
}

describe('package managers on an overlay-rooted debian13 (its /usr cannot be an upper layer)', {concurrency: false}, () => {
  let host: Host
  const cli = async (args: string[]) => {
    const r = await host.cli([...args, '--json'], {timeout: 180_000})
    return {...r, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined}
  }
  before(async () => {
    host = await bootHost('debian13')
    execFileSync('cp', [HELLO, `${host.root}/var/tmp/hello.deb`])
    await host.execOk('sh', ['-c', REPO_SETUP], {timeout: 120_000})
  })
  after(async () => {
    await host?.stop()
  })

  test('install chooses the hooks and says why; apt works; doctor tells the same', async () => {
    const good = await copyFixture(host, 'good')
    const r = await cli(['install', good, '--name', TEST1])
    assert.equal(r.exitCode, 0, r.stderr + r.stdout)
    const status = await cli(['package-managers'])
    assert.equal(status.json.mode, 'hooks')
    assert.match(status.json.reason, /overlayfs/)
    const doctor = await cli(['doctor'])
    const pm = doctor.json.checks.find((c: {id: string}) => c.id === 'package-managers')
    assert.equal(pm.ok, true)
    assert.match(pm.message, /hooks \(\/usr is on overlayfs/)
    const apt = await host.exec('apt-get', ['-y', '-q', 'install', 'hello'], {timeout: 300_000, env: {DEBIAN_FRONTEND: 'noninteractive'}})
    assert.equal(apt.exitCode, 0, apt.stdout + apt.stderr)
    assert.match((await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])).stdout, new RegExp(`^${TEST1.replace(/\./g, '\\.')}$`, 'm'))
    const hello = await host.exec('busctl', ['call', TEST1, '/org/sysexthelper/Test1', TEST1, 'Hello'], {user: TESTER.name})
    assert.equal(hello.exitCode, 0, hello.stderr)
  })

  test('a writable merge that fails is followed by a read-only one: the host stays merged', async () => {
    // Forced by hand: the link makes sysext-helper try --mutable=auto, which overlayfs refuses here.
    await host.execOk('sh', ['-c', 'mkdir -p /var/lib/extensions.mutable && ln -sfn /usr /var/lib/extensions.mutable/usr'])
    const other = '/var/tmp/fixtures/other'
    await host.execOk('sh', ['-c', `mkdir -p ${other}/usr/share/other && echo x > ${other}/usr/share/other/x && mkdir -p /var/lib/extensions && ln -sfn ${other} /var/lib/extensions/other`])
    const r = await cli(['uninstall', 'other', '--force'])
    assert.equal(r.exitCode, 0, r.stderr + r.stdout)
    const mount = (await host.execOk('sh', ['-c', "awk '$5 == \"/usr\"' /proc/self/mountinfo | tail -1"])).stdout
    assert.match(mount, /overlay sysext ro,/)
    assert.match((await host.execOk('cat', ['/usr/.systemd-sysext/extensions'])).stdout, new RegExp(`^${TEST1.replace(/\./g, '\\.')}$`, 'm'))
    await host.execOk('rm', ['/var/lib/extensions.mutable/usr'])
  })
})
