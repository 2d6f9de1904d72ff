/**
 * The install service from a real Flatpak sandbox, on real booted hosts:
 * sysext-helper installed from its self-contained extension (no Node on the
 * host), the test app run with `flatpak run` on a runtime of the guest's own
 * python3 + python3-dbus. Without a grant the app's RequestInstall is
 * AccessDenied; a dismissed dialog is Error.Dismissed (and the dialog said
 * what goes into /usr); a process in a fake app-flatpak scope is no app; an
 * app cannot name another app; with a polkit rule granting the action the
 * app's own extension is merged and the app calls its new service from inside
 * the sandbox; a tree confinement refuses is refused through this path, with
 * the findings; RequestRemoval removes it. GetStatus reports each state.
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import {FLAVORS, type Host, bootHost, canRunE2e, ensureRoots, fixturePath} from './lib/hosts.js'
import {builtExtension, copyExtensionInto} from './lib/extension.js'
import {SANDBOX_APP as APP, answerIn, inFakeScope, inSandbox, publishSandboxApp, startInSandbox, waitForOutput, withCancellingAgent} from './lib/sandbox.js'

const GUEST_EXT = '/srv/sysext-helper-extension'
const RULE = '/etc/polkit-1/rules.d/50-sysext-helper-test.rules'
const GRANT = `polkit.addRule(function (action, subject) {
  if (action.id == "io.github.sysext-helper.install-app" && action.lookup("app_id") == "${APP}") return polkit.Result.YES;
});
`

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()
builtExtension()

async function merged(host: Host): Promise<string[]> {
  return (await host.sh('cat /usr/.systemd-sysext/extensions 2>/dev/null')).stdout.split('\n').filter(Boolean)
}

const journal = async (host: Host): Promise<string> => (await host.sh('journalctl -b -u sysext-helper-manager.service --no-pager | tail -40')).stdout

for (const flavor of FLAVORS) {
  describe(`the install service from a Flatpak sandbox on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor, {noNode: true})
      copyExtensionInto(host, GUEST_EXT)
      const r = await host.exec(`${GUEST_EXT}/usr/lib/sysext-helper/node`, [`${GUEST_EXT}/usr/lib/sysext-helper/cli.js`, 'self-install', '--target', 'persistent', '--json'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      await host.execOk('sh', ['-ec', `rm -rf /var/tmp/good; cp -r ${fixturePath('good')} /var/tmp/good`])
      await publishSandboxApp(host, '/var/tmp/good')
    })
    after(async () => {
      await host?.stop()
    })

    test('GetStatus from the sandbox: the app ships an extension, not installed', async () => {
      const a = await inSandbox(host, ['status'])
      assert.ok(a.ok, `${a.error}: ${a.message}\n${a.raw.stderr}\n${await journal(host)}`)
      assert.equal(a.result!.State, 'not-installed')
      assert.equal(a.result!.ShipsExtension, true)
      assert.equal(a.result!.Merged, false)
      // Which pinning the bus allows: a pidfd from dbus-broker (Debian 13), the /proc/PID fd from dbus-daemon 1.14 (Debian 12).
      assert.match(await journal(host), flavor === 'debian12' ? /app=org\.sysexthelper\.App identity=procfd/ : /app=org\.sysexthelper\.App identity=pidfd/)
    })

    test('without a grant (no agent, no rule): AccessDenied, nothing merged', async () => {
      const a = await inSandbox(host, ['install'])
      assert.equal(a.error, 'org.freedesktop.DBus.Error.AccessDenied', `${a.message}\n${await journal(host)}`)
      assert.ok(!(await merged(host)).includes(APP))
    })

    test('a dismissed dialog is a distinct error; the dialog named what goes into /usr', async () => {
      const {answer, asked} = await withCancellingAgent(host, ['install'])
      assert.equal(answer.error, 'io.github.sysext_helper.Manager1.Error.Dismissed', `${answer.message}\nagent: ${asked}\n${await journal(host)}`)
      assert.match(asked, /ASKED io\.github\.sysext-helper\.install-app \| The app org\.sysexthelper\.App asks to add its extension org\.sysexthelper\.App to the system's \/usr \(local\): system bus names: org\.sysexthelper\.Test1/)
      assert.ok(!(await merged(host)).includes(APP))
    })

    test('a process outside the sandbox in a fake app-flatpak scope is not that app', async () => {
      await host.execOk('sh', ['-ec', `printf '%s' '${GRANT}' > ${RULE}; systemctl restart polkit`])
      for (const [n, cmd] of ['status', 'install'].entries()) {
        const a = await inFakeScope(host, [cmd], 90 + n)
        assert.equal(a.error, 'io.github.sysext_helper.Manager1.Error.NotAnApp', `${cmd}: ${a.message}\n${a.raw.stderr}`)
        assert.match(a.message!, /a cgroup scope named org\.sysexthelper\.App is not proof/)
      }
      assert.ok(!(await merged(host)).includes(APP))
    })

    test("an app cannot install another app's extension", async () => {
      const a = await inSandbox(host, ['install', JSON.stringify({AppId: 'org.sysexthelper.Other'})])
      assert.equal(a.error, 'org.freedesktop.DBus.Error.AccessDenied')
      assert.match(a.message!, /may only request its own extension/)
    })

    test('with a polkit rule granting the action: merged, and the app calls its new service from inside the sandbox', async () => {
      // Another instance of the app listens for ExtensionChanged meanwhile.
      await startInSandbox(host, ['watch', 'healthy', '90'], '/tmp/watch.out')
      await waitForOutput(host, '/tmp/watch.out', 'LISTENING', 60)
      const a = await inSandbox(host, ['install'])
      assert.ok(a.ok, `${a.error}: ${a.message}\n${await journal(host)}`)
      assert.equal(a.result!.Name, APP)
      assert.ok((await merged(host)).includes(APP))
      const hello = await inSandbox(host, ['hello'])
      assert.deepEqual(hello.result, 'hello from test1', `${hello.error}: ${hello.message}`)
      const s = await inSandbox(host, ['status'])
      assert.equal(s.result!.State, 'healthy', JSON.stringify(s))
      assert.equal(s.result!.Approved, true)
      const watched = answerIn(await waitForOutput(host, '/tmp/watch.out'))
      assert.ok(watched.ok, JSON.stringify(watched))
      const signals = (watched.result as {first: {State: string}; signals: Array<[string, {State: string}]>})
      assert.equal(signals.first.State, 'not-installed')
      assert.deepEqual(signals.signals.map(([app, st]) => [app, st.State]).at(-1), [APP, 'healthy'], JSON.stringify(signals))
    })

    test('a tree that confinement refuses is refused through this path too, with the findings', async () => {
      await host.execOk('sh', ['-ec', `rm -rf /var/tmp/evil; cp -r /var/tmp/good /var/tmp/evil
        mkdir -p /var/tmp/evil/usr/lib/systemd/system-generators
        printf '#!/bin/sh\\ntouch /run/pwned\\n' > /var/tmp/evil/usr/lib/systemd/system-generators/evil
        chmod 755 /var/tmp/evil/usr/lib/systemd/system-generators/evil`])
      await publishSandboxApp(host, '/var/tmp/evil')
      const a = await inSandbox(host, ['install'])
      assert.equal(a.error, 'io.github.sysext_helper.Manager1.Error.Refused', `${a.message}\n${await journal(host)}`)
      assert.match(a.message!, /usr\/lib\/systemd\/system-generators\/evil/)
      await host.execOk('systemctl', ['daemon-reload'])
      assert.notEqual((await host.exec('test', ['-e', '/run/pwned'])).exitCode, 0)
    })

    test('RequestRemoval removes it; GetStatus says so', async () => {
      const a = await inSandbox(host, ['remove'])
      assert.ok(a.ok, `${a.error}: ${a.message}\n${await journal(host)}`)
      assert.equal(a.result!.Removed, true)
      assert.ok(!(await merged(host)).includes(APP))
      const s = await inSandbox(host, ['status'])
      assert.notEqual(s.result?.State, 'healthy', JSON.stringify(s))
    })

    test('admin policy: Mode=disabled refuses the app; NoPasswordApps lets it install without asking polkit', async () => {
      const policy = '/etc/sysext-helper/policy.conf'
      await publishSandboxApp(host, '/var/tmp/good')
      // No grant from here on: only the policy file can let the request through.
      await host.execOk('sh', ['-ec', `rm -f ${RULE}; systemctl restart polkit; mkdir -p /etc/sysext-helper; printf '[Requests]\\nMode=disabled\\n' > ${policy}`])
      const off = await inSandbox(host, ['install'])
      assert.equal(off.error, 'io.github.sysext_helper.Manager1.Error.Disabled', `${off.message}\n${await journal(host)}`)
      assert.match(off.message!, /Mode=disabled/)
      assert.ok(!(await merged(host)).includes(APP))
      await host.execOk('sh', ['-ec', `printf '[Requests]\\nNoPasswordApps=${APP};\\n' > ${policy}`])
      const on = await inSandbox(host, ['install'])
      assert.ok(on.ok, `${on.error}: ${on.message}\n${await journal(host)}`)
      assert.ok((await merged(host)).includes(APP))
      assert.match(await journal(host), /RequestInstall: no password by policy/)
      const removed = await inSandbox(host, ['remove'])
      assert.ok(removed.ok, `${removed.error}: ${removed.message}`)
      assert.ok(!(await merged(host)).includes(APP))
      await host.execOk('sh', ['-ec', `rm -f ${policy}; printf '%s' '${GRANT}' > ${RULE}; systemctl restart polkit`])
    })

    test("the README's Python/GDBus client, run in the sandbox, requests and gets the extension", async () => {
      const r = await host.sh(`FLATPAK_BWRAP=/srv/sandbox/bwrap-nouserns flatpak run --system ${APP} /app/bin/readme-example.py`, {user: 'tester', timeout: 600_000})
      assert.match(r.stdout, /^(merged|installed) org\.sysexthelper\.App$/m, r.stdout + r.stderr)
      assert.ok((await merged(host)).includes(APP))
    })
  })
}
