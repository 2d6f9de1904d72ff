/**
 * Integrity (issue 10) on real booted hosts, one per flavor: a user's tree raced
 * against root's read, drift of the live content, a forged state file, a full and a
 * read-only /var/lib/sysext-helper, reboots, and kill -9 at random moments.
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, GUEST_NODE, type Host, REPO_ROOT, TESTER, bootHost, canRunE2e, ensureRoots, fixturePath} from './lib/hosts.js'

const TEST1 = 'org.sysexthelper.Test1'
const UNIT = 'sysext-helper-test1.service'
const hello = ['busctl', 'call', TEST1, '/org/sysexthelper/Test1', TEST1, 'Hello']
const STATE = '/var/lib/sysext-helper/state.json'
const STAGES = '/var/lib/sysext-helper/stage'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

async function json(host: Host, args: string[], env?: Record<string, string>) {
  const r = await host.cli([...args, '--json'], {timeout: 180_000, env})
  let parsed
  try {
    parsed = r.stdout.trim() ? JSON.parse(r.stdout) : undefined
  } catch {
    parsed = undefined
  }
  return {...r, json: parsed}
}

async function state(host: Host) {
  return JSON.parse((await host.execOk('cat', [STATE])).stdout)
}

async function merged(host: Host): Promise<string[]> {
  return (await host.sh('cat /usr/.systemd-sysext/extensions 2>/dev/null')).stdout.split('\n').filter(Boolean).sort()
}

/** The host as the failure tests compare it: links, stages, state, merged set, /usr mount, polkit's PID. */
async function snapshot(host: Host): Promise<string> {
  const r = await host.sh(
    'ls -la /var/lib/extensions /etc/extensions /run/extensions 2>/dev/null | sed "s/.*[0-9] //"; ls -a ' + STAGES + ' 2>/dev/null; ' +
      `cat ${STATE} 2>/dev/null; cat /usr/.systemd-sysext/extensions 2>/dev/null; awk '$5 == "/usr" {print $1}' /proc/self/mountinfo; ` +
      'systemctl show polkit -p MainPID --value',
  )
  return r.stdout
}

/** A data-only extension tree at `dir` (staged: no release file). */
async function dataTree(host: Host, dir: string, name: string, bytes = 16): Promise<void> {
  await host.execOk('sh', ['-ec', `rm -rf "$1"; mkdir -p "$1/usr/share/$2"; head -c "$3" /dev/urandom | base64 > "$1/usr/share/$2/data"`, 'sh', dir, name, String(bytes)])
}

for (const flavor of FLAVORS) {
  describe(`integrity on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor)
    })
    after(async () => {
      await host?.stop()
    })

    test('a user racing a symlink to /etc/shadow against the read never gets unvalidated bytes staged or merged', async () => {
      const shadowLine = (await host.execOk('head', ['-1', '/etc/shadow'])).stdout.trim()
      assert.ok(shadowLine.length > 5)
      const home = `/home/${TESTER.name}`
      await host.execOk('sh', ['-ec', `mkdir -p ${home}/ext/usr/share/race-ext ${home}/scratch; printf harmless > ${home}/ext/usr/share/race-ext/secret; chown -R ${TESTER.name}: ${home}/ext ${home}/scratch`])
      // The racer: swaps the file for a symlink to /etc/shadow and back, as fast as it can, until told to stop.
      const racer = host.exec('sh', ['-c', `cd ${home}; while [ ! -e /tmp/stop-race ]; do ln -sf /etc/shadow scratch/l; mv -T scratch/l ext/usr/share/race-ext/secret; printf harmless > scratch/f; mv -T scratch/f ext/usr/share/race-ext/secret; done`],
        {user: TESTER.name, timeout: 300_000})
      let installed = 0
      let refused = 0
      try {
        for (let round = 0; round < 12; round++) {
          const r = await json(host, ['install', `${home}/ext`, '--name', 'race-ext', '--no-verify'])
          if (r.exitCode === 0) {
            installed++
            assert.equal(r.json.mode, 'stage')
            assert.equal(r.json.readAs, TESTER.uid, 'the tree is read with its owner\'s privileges')
            // A copy that caught the symlink is refused by confinement (confine-symlink): merged, it is the harmless file.
            assert.equal((await host.execOk('stat', ['-c', '%F', '/usr/share/race-ext/secret'])).stdout.trim(), 'regular file')
            assert.equal((await host.execOk('cat', ['/usr/share/race-ext/secret'])).stdout, 'harmless')
          } else {
            refused++
            const code = r.json?.error?.code
            if (code === 'INSTALL_INVALID') assert.deepEqual(r.json.error.data.findings.map((f: {rule: string}) => f.rule), ['confine-symlink'], r.stdout)
            else {
              assert.ok(['STAGE_SOURCE_UNREADABLE', 'STAGE_REFUSED'].includes(code), r.stdout + r.stderr)
              assert.equal(r.json.error.step, 'stage')
            }
          }
          // Nothing anywhere under the stages or the merged tree holds shadow's bytes.
          const leak = await host.sh(`grep -rlF -- '${shadowLine.replace(/'/g, "'\\''")}' ${STAGES} /usr/share/race-ext 2>/dev/null`)
          assert.equal(leak.stdout.trim(), '', `shadow content reached ${leak.stdout}`)
          const uninstall = await host.cli(['uninstall', 'race-ext'])
          assert.ok(uninstall.exitCode === 0 || r.exitCode !== 0, uninstall.stderr)
        }
      } finally {
        await host.execOk('touch', ['/tmp/stop-race'])
        await racer
      }
      assert.ok(installed + refused === 12)
      console.log(`# ${flavor}: race rounds: ${installed} installed (validated copy), ${refused} refused (at stage, or the symlink caught by confinement)`)
    })

    test('the issue\'s attack: the file swapped for a symlink to /etc/shadow right after the read changes nothing', async () => {
      const home = `/home/${TESTER.name}`
      await host.execOk('sh', ['-ec', `rm -rf ${home}/ext2; mkdir -p ${home}/ext2/usr/share/aaa; printf harmless > ${home}/ext2/usr/share/aaa/secret; chown -R ${TESTER.name}: ${home}/ext2`])
      // The run holds still for 3 s when validation starts: after the one read of the source, before
      // anything is scanned, hashed, copied or merged (where the old code re-read the source).
      const run = json(host, ['install', `${home}/ext2`, '--name', 'aaa', '--no-verify'], {SYSEXT_HELPER_PAUSE_AT: 'validate'})
      await host.sh(`for i in $(seq 100); do [ -n "$(ls -A ${STAGES} 2>/dev/null | grep incoming)" ] && exit 0; sleep 0.02; done; exit 1`)
      await host.execOk('sh', ['-c', `sleep 0.5; ln -s /etc/shadow ${home}/l && mv -T ${home}/l ${home}/ext2/usr/share/aaa/secret`], {user: TESTER.name})
      const r = await run
      assert.equal(r.exitCode, 0, r.stdout + r.stderr)
      assert.equal((await host.execOk('stat', ['-c', '%F %U %a', '/usr/share/aaa/secret'])).stdout.trim(), 'regular file root 644')
      assert.equal((await host.execOk('cat', ['/usr/share/aaa/secret'])).stdout, 'harmless')
      assert.equal((await host.execOk('cat', [`${r.json.linkTarget}/usr/share/aaa/secret`])).stdout, 'harmless')
      assert.equal((await host.cli(['status', 'aaa'])).exitCode, 0, 'the stage is what was validated: no drift')
      assert.equal((await host.cli(['uninstall', 'aaa'])).exitCode, 0)
    })

    test('drift in place: files added after install are reported by status and list; install refuses with the way back', async () => {
      await host.execOk('sh', ['-ec', 'rm -rf /srv/drift; mkdir -p /srv/drift/usr/share/drift /srv/drift/usr/lib/extension-release.d; echo ok > /srv/drift/usr/share/drift/README; echo ID=_any > /srv/drift/usr/lib/extension-release.d/extension-release.drift'])
      const r = await json(host, ['install', '/srv/drift', '--name', 'drift'])
      assert.equal(r.exitCode, 0, r.stdout + r.stderr)
      assert.equal(r.json.mode, 'in-place')
      assert.equal((await host.cli(['status', 'drift'])).exitCode, 0)
      await host.execOk('sh', ['-ec', 'mkdir -p /srv/drift/usr/bin; cp /bin/true /srv/drift/usr/bin/drift-true; chmod 4755 /srv/drift/usr/bin/drift-true; echo x > /srv/drift/usr/share/drift/open; chmod 666 /srv/drift/usr/share/drift/open'])
      const status = await json(host, ['status', 'drift'])
      assert.equal(status.exitCode, 1, status.stdout)
      assert.equal(status.json.healthy, false)
      assert.equal(status.json.drift.drifted, true)
      assert.ok(status.json.drift.added.includes('usr/bin/drift-true'), JSON.stringify(status.json.drift))
      const problem = status.json.problems.find((p: string) => p.includes('not what was validated'))
      assert.ok(problem, JSON.stringify(status.json.problems))
      assert.match(problem, /added usr\/bin, usr\/bin\/drift-true, usr\/share\/drift\/open/)
      assert.match(problem, /sysext-helper install \/srv\/drift --name drift/)
      const list = await json(host, ['list'])
      assert.equal(list.json.extensions.find((e: {name: string}) => e.name === 'drift').drifted, true)
      const again = await json(host, ['install', '/srv/drift', '--name', 'drift'])
      assert.equal(again.exitCode, 1)
      assert.equal(again.json.error.code, 'INSTALL_INVALID')
      assert.match(again.json.error.message, /is not the one that was validated .* stays merged until you remove it/)
      assert.match(again.json.error.hint, /sysext-helper uninstall drift/)
      assert.equal((await host.cli(['uninstall', 'drift'])).exitCode, 0)
      assert.equal((await host.exec('test', ['-e', '/usr/bin/drift-true'])).exitCode, 1)
    })

    test('drift of a stage: reported, and install re-stages a fresh validated copy from the source', async () => {
      await dataTree(host, '/srv/staged', 'staged')
      const r = await json(host, ['install', '/srv/staged', '--name', 'staged'])
      assert.equal(r.exitCode, 0, r.stdout + r.stderr)
      assert.equal(r.json.mode, 'stage')
      await host.execOk('sh', ['-c', `echo tampered >> ${r.json.linkTarget}/usr/share/staged/data`])
      const status = await json(host, ['status', 'staged'])
      assert.equal(status.exitCode, 1)
      assert.deepEqual(status.json.drift.changed, ['usr/share/staged/data'])
      const again = await json(host, ['install', '/srv/staged', '--name', 'staged'])
      assert.equal(again.exitCode, 0, again.stdout + again.stderr)
      assert.equal(again.json.action, 'update')
      assert.notEqual(again.json.linkTarget, r.json.linkTarget)
      assert.equal(again.json.hash, r.json.hash)
      assert.ok(again.json.warnings.some((w: {message: string}) => /not the one that was validated/.test(w.message)), JSON.stringify(again.json.warnings))
      assert.equal((await host.cli(['status', 'staged'])).exitCode, 0)
      assert.doesNotMatch((await host.execOk('cat', ['/usr/share/staged/data'])).stdout, /tampered/)
      assert.equal((await host.cli(['uninstall', 'staged'])).exitCode, 0)
    })

    test('a forged or broken state file is refused (STATE_INVALID) and nothing outside sysext-helper\'s directories is touched', async () => {
      await dataTree(host, '/srv/forge', 'forge')
      assert.equal((await host.cli(['install', '/srv/forge', '--name', 'forge'])).exitCode, 0)
      const saved = (await host.execOk('cat', [STATE])).stdout
      await host.execOk('sh', ['-ec', 'echo guest > /etc/hostname; mkdir -p /root/victimdir; echo precious > /root/victimdir/file'])
      const forged = JSON.parse(saved)
      forged.pending['forge'] = {name: 'forge', op: 'install', restore: [{link: '/etc/hostname', target: null}], newStage: '/root/victimdir', startedAt: 'x', pid: 1}
      const cases: Array<[string, string, RegExp]> = [
        [JSON.stringify(forged), 'pending["forge"].restore[0].link', /restore\[0\]\.link must be/],
        [JSON.stringify({...forged, pending: {'forge': {...forged.pending['forge'], restore: []}}}), 'pending["forge"].newStage', /newStage must be/],
        [JSON.stringify({...JSON.parse(saved), extensions: {'forge': {...JSON.parse(saved).extensions['forge'], stage: '/root/victimdir', linkTarget: '/root/victimdir'}}}), 'extensions["forge"].stage', /stage must be/],
        ['null', 'the top level', /the top level must be an object/],
        ['{"extensions":null}', 'extensions', /extensions must be an object \(found null\)/],
      ]
      for (const [content, field, message] of cases) {
        await host.execOk('sh', ['-c', `cat > ${STATE}`], {input: content})
        for (const args of [['install', '/srv/forge', '--name', 'forge'], ['uninstall', 'forge'], ['status', 'forge'], ['list']]) {
          const r = await json(host, args)
          assert.equal(r.exitCode, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
          assert.equal(r.json.error.code, 'STATE_INVALID', r.stdout)
          assert.equal(r.json.error.data.field, field)
          assert.equal(r.json.error.file, STATE)
          assert.match(r.json.error.message, message)
        }
        assert.equal((await host.execOk('cat', ['/etc/hostname'])).stdout.trim(), 'guest')
        assert.equal((await host.execOk('cat', ['/root/victimdir/file'])).stdout.trim(), 'precious')
      }
      await host.execOk('sh', ['-c', `cat > ${STATE}`], {input: saved})
      assert.equal((await host.cli(['uninstall', 'forge'])).exitCode, 0)
    })

    test('--expect-hash (what the Manager passes after the dialog): a tree changed since its dry run is refused before anything changes', async () => {
      await dataTree(host, '/srv/shown', 'shown')
      const shown = await json(host, ['install', '/srv/shown', '--name', 'shown', '--dry-run'])
      assert.equal(shown.exitCode, 0, shown.stderr)
      assert.match(shown.json.hash, /^[0-9a-f]{64}$/)
      // The tree changes between the dialog and the install (a Flatpak update landing).
      await dataTree(host, '/srv/shown', 'shown')
      const before = await snapshot(host)
      const r = await json(host, ['install', '/srv/shown', '--name', 'shown', '--no-verify', '--expect-hash', shown.json.hash])
      assert.equal(r.exitCode, 1, r.stdout)
      assert.equal(r.json.error.code, 'TREE_CHANGED')
      assert.equal(r.json.error.step, 'validate')
      assert.match(r.json.error.message, /nothing was changed/)
      assert.equal(await snapshot(host), before)
      assert.equal((await host.sh(`ls -A ${STAGES} 2>/dev/null | grep -c incoming`)).stdout.trim(), '0', 'no staged copy is left behind')
      // The tree as it is now, shown again: installed.
      const again = await json(host, ['install', '/srv/shown', '--name', 'shown', '--dry-run'])
      const ok = await json(host, ['install', '/srv/shown', '--name', 'shown', '--no-verify', '--expect-hash', again.json.hash])
      assert.equal(ok.exitCode, 0, ok.stdout + ok.stderr)
      assert.equal(ok.json.hash, again.json.hash)
      assert.ok((await merged(host)).includes('shown'))
      assert.equal((await host.cli(['uninstall', 'shown'])).exitCode, 0)
    })

    test('disk full while staging: STAGE_FAILED at the stage step, host unchanged, no refresh or reload', async () => {
      // Test1 merged and polkit running: a refresh or a polkit restart would show in the snapshot.
      assert.equal((await host.cli(['install', fixturePath('good'), '--name', TEST1])).exitCode, 0)
      await host.execOk('sh', ['-ec', `mkdir -p ${STAGES}; mount -t tmpfs -o size=64k,mode=0700 tmpfs ${STAGES}`])
      try {
        await dataTree(host, '/srv/big', 'big', 400_000)
        const before = await snapshot(host)
        const r = await json(host, ['install', '/srv/big', '--name', 'big'])
        assert.equal(r.exitCode, 1, r.stdout)
        assert.equal(r.json.error.code, 'STAGE_FAILED')
        assert.equal(r.json.error.step, 'stage')
        assert.match(r.json.error.message, /No space left on device/)
        assert.match(r.json.error.message, new RegExp(STAGES))
        assert.match(r.json.error.hint, /Free space on the filesystem holding/)
        assert.equal(await snapshot(host), before)
        assert.equal((await host.sh(`ls -A ${STAGES} | grep -c incoming`)).stdout.trim(), '0')
      } finally {
        await host.sh(`umount ${STAGES}`)
      }
    })

    test('disk full while writing the state: STATE_WRITE_FAILED naming the file, host unchanged', async () => {
      const before = await snapshot(host)
      // A full filesystem for the state file, a roomy one for the stages.
      await host.execOk('sh', ['-ec', `mkdir -p /run/sx && cp -a /var/lib/sysext-helper/. /run/sx/ && mount -t tmpfs -o size=64k,mode=0755 tmpfs /var/lib/sysext-helper && cp -a /run/sx/. /var/lib/sysext-helper/ && mkdir -p ${STAGES} && mount -t tmpfs -o mode=0700 tmpfs ${STAGES} && (dd if=/dev/zero of=/var/lib/sysext-helper/fill bs=1k 2>/dev/null || true)`])
      try {
        await dataTree(host, '/srv/small', 'small')
        const r = await json(host, ['install', '/srv/small', '--name', 'small'])
        assert.equal(r.exitCode, 1, r.stdout)
        assert.equal(r.json.error.code, 'STATE_WRITE_FAILED')
        assert.equal(r.json.error.file, STATE)
        assert.match(r.json.error.message, /No space left on device/)
        assert.match(r.json.error.hint, /Free space on the filesystem holding \/var\/lib\/sysext-helper/)
        const u = await json(host, ['uninstall', TEST1])
        assert.equal(u.json.error.code, 'STATE_WRITE_FAILED', u.stdout)
      } finally {
        await host.sh(`umount ${STAGES}; umount /var/lib/sysext-helper; rm -rf /run/sx`)
      }
      assert.equal(await snapshot(host), before)
      assert.deepEqual(await merged(host), [TEST1])
    })

    test('read-only /var/lib/sysext-helper: typed errors (stage, state), host unchanged', async () => {
      const before = await snapshot(host)
      await host.execOk('sh', ['-ec', 'mount --bind /var/lib/sysext-helper /var/lib/sysext-helper && mount -o remount,bind,ro /var/lib/sysext-helper'])
      try {
        await dataTree(host, '/srv/ro', 'ro')
        const r = await json(host, ['install', '/srv/ro', '--name', 'ro'])
        assert.equal(r.exitCode, 1, r.stdout)
        assert.equal(r.json.error.code, 'STAGE_FAILED')
        assert.equal(r.json.error.step, 'stage')
        assert.match(r.json.error.message, /Read-only file system/)
        assert.match(r.json.error.hint, /read-only filesystem: remount it read-write/)
        assert.ok(!r.json.error.message.includes('This is a bug'))
        const u = await json(host, ['uninstall', TEST1])
        assert.equal(u.exitCode, 1)
        assert.equal(u.json.error.code, 'STATE_WRITE_FAILED')
        assert.match(u.json.error.message, /Read-only file system/)
      } finally {
        await host.sh('umount /var/lib/sysext-helper')
      }
      assert.equal(await snapshot(host), before)
    })

    test('an orphan of an interrupted uninstall never answers a later install', async () => {
      // good is installed; activate it, then kill an uninstall before it stops anything.
      assert.equal((await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})).stdout.trim(), 's "hello from test1"')
      const killed = await host.cli(['uninstall', TEST1], {env: {SYSEXT_HELPER_CRASH_AT: 'stop'}})
      assert.notEqual(killed.exitCode, 0)
      assert.equal((await host.exec('systemctl', ['is-active', UNIT])).stdout.trim(), 'active', 'the v1 service is still running')
      const r = await json(host, ['install', fixturePath('good-v2'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stdout + r.stderr)
      assert.ok(r.json.steps.some((s: {step: string; detail?: string}) => s.step === 'recover' && /stopped sysext-helper-test1\.service/.test(s.detail ?? '')), JSON.stringify(r.json.steps))
      assert.equal((await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})).stdout.trim(), 's "hello from test1 v2"')
      const answered = r.json.verification.answeredBy[0]
      assert.equal(answered.unit, UNIT)
    })

    test('a re-run of an interrupted uninstall succeeds and leaves no unit running', async () => {
      assert.equal((await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})).exitCode, 0)
      for (const at of ['unlink', 'refresh']) {
        if (!(await state(host)).extensions[TEST1]) assert.equal((await host.cli(['install', fixturePath('good'), '--name', TEST1])).exitCode, 0)
        const killed = await host.cli(['uninstall', TEST1], {env: {SYSEXT_HELPER_CRASH_AT: at}})
        assert.notEqual(killed.exitCode, 0)
        const rerun = await json(host, ['uninstall', TEST1])
        assert.equal(rerun.exitCode, 0, rerun.stdout + rerun.stderr)
        assert.equal(rerun.json.managed, true)
        assert.equal((await host.exec('systemctl', ['is-active', UNIT])).stdout.trim(), 'inactive')
        assert.deepEqual(await merged(host), [])
        assert.deepEqual((await state(host)).extensions, {})
      }
    })

    test('kill -9 at random moments of install, update and uninstall; the same command again converges', async () => {
      const ops: Array<{op: 'install' | 'update' | 'uninstall'; version?: 'good' | 'good-v2'}> = []
      for (let i = 0; i < 9; i++) ops.push({op: (['install', 'update', 'uninstall'] as const)[i % 3], version: i % 2 ? 'good-v2' : 'good'})
      const log: string[] = []
      for (const {op, version} of ops) {
        // Arrange the starting point: absent for install, the other version for update, installed for uninstall.
        const s = await state(host).catch(() => ({extensions: {}}))
        if (op === 'install' && s.extensions[TEST1]) assert.equal((await host.cli(['uninstall', TEST1])).exitCode, 0)
        const other = version === 'good' ? 'good-v2' : 'good'
        if (op !== 'install') assert.equal((await host.cli(['install', fixturePath(op === 'update' ? other : 'good'), '--name', TEST1])).exitCode, 0)
        // The service runs (an active old version is what a bad recovery would leave answering).
        if (op !== 'install') await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})
        const args = op === 'uninstall' ? ['uninstall', TEST1] : ['install', fixturePath(version as 'good' | 'good-v2'), '--name', TEST1]
        // The CLI needs ~0.3 s to start and ~1-1.5 s for a whole change on these hosts.
        const delay = (0.3 + Math.random() * 1.2).toFixed(2)
        const quoted = args.map((a) => `'${a}'`).join(' ')
        const k = await host.sh(`${GUEST_NODE} ${REPO_ROOT}/bin/run.js ${quoted} >/dev/null 2>/tmp/killed.err & p=$!; sleep ${delay}; kill -9 $p 2>/dev/null; wait $p; echo $?`)
        const firstExit = Number(k.stdout.trim())
        // Plain progress lines on stderr: the last one names the step the kill hit.
        const lastLine = (await host.execOk('cat', ['/tmp/killed.err'])).stdout.trim().split('\n').pop() ?? ''
        log.push(`${op} ${version ?? ''} killed after ${delay}s -> ${firstExit === 137 ? `killed (last: ${lastLine.slice(0, 60) || 'nothing printed'})` : `finished (${firstExit})`}`)
        const rerun = await json(host, args)
        if (op === 'uninstall' && firstExit === 0) assert.equal(rerun.json?.error?.code, 'UNINSTALL_NOT_MANAGED', rerun.stdout)
        else assert.equal(rerun.exitCode, 0, `${op} after a kill at ${delay}s: ${rerun.stdout}${rerun.stderr}`)
        const st = await state(host)
        assert.deepEqual(st.pending, {})
        assert.deepEqual(await merged(host), Object.keys(st.extensions).sort(), 'merged set = managed set')
        assert.equal((await host.sh(`ls -A /var/lib/sysext-helper ${STAGES} | grep -E '\\.tmp$|^\\.incoming-' || true`)).stdout.trim(), '', 'no leftovers')
        if (op === 'uninstall') {
          assert.equal((await host.exec('systemctl', ['is-active', UNIT])).stdout.trim(), 'inactive', 'no orphan unit')
          assert.notEqual((await host.exec('busctl', ['call', TEST1, '/', 'org.freedesktop.DBus.Peer', 'Ping'])).exitCode, 0)
        } else {
          // No manual stop: the version that answers is the one installed.
          const call = await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})
          assert.equal(call.stdout.trim(), version === 'good' ? 's "hello from test1"' : 's "hello from test1 v2"')
        }
      }
      console.log(`# ${flavor}: ${log.join('; ')}`)
    })

    test('after a reboot: the installed extension is merged and answering; runtime ones are recognised as gone', async () => {
      await host.execOk('systemctl', ['disable', 'systemd-sysext.service'])
      const r = await json(host, ['install', fixturePath('good'), '--name', TEST1])
      assert.equal(r.exitCode, 0, r.stdout + r.stderr)
      assert.equal(r.json.bootEnabled, true)
      assert.ok(r.json.steps.some((s: {step: string}) => s.step === 'enable'))
      assert.match((await host.cli(['install', fixturePath('good'), '--name', TEST1])).stdout, /already installed/)
      await dataTree(host, '/srv/rt', 'rt')
      const rt = await json(host, ['install', '/srv/rt', '--name', 'rt', '--target', 'runtime'])
      assert.equal(rt.exitCode, 0, rt.stdout + rt.stderr)
      await host.reboot()
      assert.deepEqual(await merged(host), [TEST1])
      assert.equal((await host.execOk(hello[0], hello.slice(1), {user: TESTER.name})).stdout.trim(), 's "hello from test1"')
      assert.equal((await host.cli(['status', TEST1])).exitCode, 0)
      const list = await json(host, ['list'])
      assert.deepEqual(list.json.goneAfterReboot, ['rt'])
      assert.equal(list.json.extensions.some((e: {name: string}) => e.name === 'rt'), false)
      assert.deepEqual((await json(host, ['list'])).json.goneAfterReboot, [], 'reported once')
      assert.equal((await state(host)).extensions['rt'], undefined)
      assert.equal((await host.sh(`ls ${STAGES} | grep -c rt.ext`)).stdout.trim(), '0')
    })

    test('status says why it is not merged after a boot: the service disabled, or an entry in /etc/extensions shadowing ours', async () => {
      await host.execOk('systemctl', ['disable', 'systemd-sysext.service'])
      await host.reboot()
      assert.deepEqual(await merged(host), [])
      const s = await json(host, ['status', TEST1])
      assert.equal(s.exitCode, 1)
      assert.ok(s.json.problems.some((p: string) => /systemd-sysext\.service is disabled, so nothing merged it at boot.*systemctl enable --now systemd-sysext\.service/.test(p)), JSON.stringify(s.json.problems))
      const repair = await json(host, ['install', fixturePath('good'), '--name', TEST1])
      assert.equal(repair.exitCode, 0, repair.stdout)
      assert.equal(repair.json.action, 'repair')
      assert.equal(repair.json.bootEnabled, true)
      // An empty entry of the same name in an earlier directory shadows ours (observed on 252 and 257:
      // "1 ignored due to incompatible image"; a symlink to /dev/null there is skipped and masks nothing).
      await host.execOk('sh', ['-ec', `mkdir -p /etc/extensions/${TEST1}; systemd-sysext refresh || true`])
      try {
        const masked = await json(host, ['status', TEST1])
        assert.equal(masked.exitCode, 1)
        assert.ok(masked.json.problems.some((p: string) => p.includes(`not merged: /etc/extensions/${TEST1} (dir) shadows /var/lib/extensions/${TEST1}`) && p.includes(`Remove /etc/extensions/${TEST1}`)), JSON.stringify(masked.json.problems))
      } finally {
        await host.sh(`rmdir /etc/extensions/${TEST1}; systemd-sysext refresh`)
      }
      assert.equal((await host.cli(['status', TEST1])).exitCode, 0)
      assert.equal((await host.cli(['uninstall', TEST1])).exitCode, 0)
    })
  })
}
