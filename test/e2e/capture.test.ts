/**
 * The monitor helper on real booted hosts, installed from the self-contained
 * extension (no Node on the host): a user granted the action by a polkit rule
 * captures the system bus, including other users' traffic; a user without the
 * grant gets exit 127 and no data.
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, REPO_ROOT, TESTER, bootHost, canRunE2e, ensureRoots} from './lib/hosts.js'
import {builtExtension, copyExtensionInto} from './lib/extension.js'

const GUEST_EXT = '/srv/sysext-helper-extension'
const ACTION = 'io.github.sysext-helper.monitor'
const PCAP_MAGIC = 'd4c3b2a1'
const ATTACKER = `${REPO_ROOT}/test/e2e/lib/raw-dbus-client.py`
const UNIT = 'sysext-helper-monitor.service'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

builtExtension()

for (const flavor of FLAVORS) {
  describe(`capture through the monitor helper on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor, {noNode: true})
      copyExtensionInto(host, GUEST_EXT)
      const r = await host.exec(`${GUEST_EXT}/usr/lib/sysext-helper/node`, [`${GUEST_EXT}/usr/lib/sysext-helper/cli.js`, 'install', GUEST_EXT, '--name', 'sysext-helper', '--allow', 'commands', '--allow', 'boot-units', '--allow', 'flatpak-triggers'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      await host.execOk('sh', ['-c', [
        'useradd --create-home --uid 1001 --user-group --shell /bin/bash other',
        'mkdir -p /etc/polkit-1/rules.d',
        `printf '%s\\n' 'polkit.addRule(function (action, subject) {' '  if (action.id == "${ACTION}" && subject.user == "${TESTER.name}") return polkit.Result.YES;' '});' > /etc/polkit-1/rules.d/50-sysext-helper-test.rules`,
        'systemctl try-restart polkit.service',
      ].join(' && ')])
    })
    after(async () => {
      await host?.stop()
    })

    test('the helper service is installed and activatable', async () => {
      assert.equal((await host.exec('pkaction', ['--action-id', ACTION])).exitCode, 0)
      const ping = await host.exec('busctl', ['call', 'io.github.sysext_helper.Monitor1', '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      assert.equal(ping.exitCode, 0, ping.stderr)
    })

    test('an unauthorized user cannot knock the service over: bad fd index, fd flood; it stays up, leaks nothing, still captures', async () => {
      const mainPid = async (): Promise<number> => Number((await host.execOk('systemctl', ['show', '-P', 'MainPID', UNIT])).stdout.trim())
      const fds = async (pid: number): Promise<number> => Number((await host.execOk('sh', ['-c', `ls /proc/${pid}/fd | wc -l`])).stdout.trim())
      await host.execOk('busctl', ['call', 'io.github.sysext_helper.Monitor1', '/', 'org.freedesktop.DBus.Peer', 'Ping'])
      const pid = await mainPid()
      assert.ok(pid > 0, 'the service is not running')
      const baseline = await fds(pid)
      const r = await host.exec('python3', [ATTACKER, '300'], {user: 'other', timeout: 120_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const result = JSON.parse(r.stdout)
      assert.deepEqual(result.badIndex, {type: 3, error: 'org.freedesktop.DBus.Error.InvalidArgs'}, r.stdout)
      assert.equal(result.floodSent, 300)
      assert.deepEqual(result.ping, {type: 2, error: null}, r.stdout)
      assert.equal(await mainPid(), pid, 'the service was restarted')
      assert.equal((await host.exec('systemctl', ['is-active', UNIT])).stdout.trim(), 'active')
      let now = await fds(pid)
      for (let i = 0; i < 50 && now > baseline; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        now = await fds(pid)
      }
      assert.equal(now, baseline, `the service holds ${now} fds after the flood, ${baseline} before`)
      const journal = (await host.exec('journalctl', ['-u', UNIT, '--no-pager', '-o', 'cat'])).stdout
      assert.match(journal, /refused an undecodable call .*Start/)
      assert.doesNotMatch(journal, /^fatal:/m)
      // An authorized capture still works, in the same service process.
      const ok = await host.exec('/usr/bin/sysext-helper', ['capture', '--system', '--output', '/tmp/after-attack.pcap', '--duration', '2', '--json'], {user: TESTER.name, timeout: 60_000})
      assert.equal(ok.exitCode, 0, ok.stderr + ok.stdout)
      assert.equal((await host.execOk('sh', ['-c', 'head -c 4 /tmp/after-attack.pcap | od -An -tx1 | tr -d " \\n"'])).stdout, PCAP_MAGIC)
      assert.equal(await mainPid(), pid)
      console.log(`# ${flavor}: service fds ${baseline} before, ${now} after 300 x 16 fds; bad-index Start answered ${result.badIndex.error}`)
    })

    test("a granted user captures the system bus, including another user's messages", async () => {
      const capture = host.exec('/usr/bin/sysext-helper', ['capture', '--system', '--output', '/tmp/capture.pcap', '--duration', '6', '--json'], {user: TESTER.name, timeout: 60_000})
      // The pcap header is written only once BecomeMonitor succeeded: wait for it, then send
      // traffic from root (another user): a signal with a marker in its body, three times.
      const started = await host.sh('for i in $(seq 400); do [ "$(stat -c %s /tmp/capture.pcap 2>/dev/null || echo 0)" -ge 24 ] && exit 0; sleep 0.05; done; exit 1')
      assert.equal(started.exitCode, 0, 'the capture did not start within 20 s')
      await host.sh('for i in 1 2 3; do busctl emit /org/example/E2e org.example.E2e Marker s e2e-marker-from-root; done')
      const r = await capture
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const header = (await host.execOk('sh', ['-c', 'head -c 4 /tmp/capture.pcap | od -An -tx1 | tr -d " \\n"'])).stdout
      assert.equal(header, PCAP_MAGIC)
      const markers = Number((await host.execOk('sh', ['-c', 'grep -a -o e2e-marker-from-root /tmp/capture.pcap | wc -l'])).stdout.trim())
      assert.equal(markers, 3)
      const summary = JSON.parse(r.stdout)
      assert.ok(summary.messages >= 3, JSON.stringify(summary))
      // The audit line names the caller as read from its /proc/PID/root (CAP_SYS_PTRACE in the unit): tester runs
      // no Flatpak, so 'not-flatpak', pinned; without the capability it would say 'unreadable'.
      const journal = (await host.exec('journalctl', ['-u', UNIT, '--no-pager', '-o', 'cat'])).stdout
      const starts = journal.split('\n').filter((l) => /capture \S+ start: /.test(l) && l.includes(`uid=${TESTER.uid} `))
      assert.ok(starts.length > 0, journal)
      for (const line of starts) assert.match(line, /identity=not-flatpak/, line)
      // The service, in its sandbox, tells which program routes the bus (it sets how the monitor reads).
      const ends = journal.split('\n').filter((l) => /capture \S+ end: /.test(l) && l.includes(`uid=${TESTER.uid} `))
      assert.ok(ends.length > 0, journal)
      for (const line of ends) assert.match(line, flavor === 'debian12' ? / bus=dbus-daemon$/ : / bus=dbus-broker$/, line)
    })

    test('a user without the grant gets exit 127 and no data', async () => {
      const r = await host.exec('/usr/bin/sysext-helper', ['capture', '--system', '--output', '/tmp/denied.pcap', '--duration', '2'], {user: 'other', timeout: 60_000})
      assert.equal(r.exitCode, 127, r.stderr + r.stdout)
      assert.match(r.stderr, /not authorized|Not authorized|AccessDenied/i)
      const size = (await host.sh('stat -c %s /tmp/denied.pcap 2>/dev/null || echo absent')).stdout.trim()
      assert.ok(size === 'absent' || size === '0', `no data for a denied user, got ${size}`)
    })
  })
}
