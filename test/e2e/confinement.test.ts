/**
 * Confinement on real booted hosts, as a malicious Flatpak would try it: each
 * tree is the working test service (fixture "good") plus one attack. Each must
 * be refused by `validate` (exit 1, naming the file) and by `install` (nothing
 * merged, the host as it was), and the attack's effect must not have happened.
 * Then extensions that need more than their own service install only with the
 * extra granted by name: real Debian packages' files (rtkit, accountsservice),
 * and the rule for a granted extra is recorded and shown.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {debianPackageTree} from './lib/debian-packages.js'
import {FLAVORS, type Host, TESTER, bootHost, canRunE2e, ensureRoots, fixturePath} from './lib/hosts.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

const NAME = 'org.sysexthelper.Test1'
const EXE = '#!/bin/sh\ntouch /run/pwned\n'
type Spec = string | {symlink: string} | {exe: string}

interface Attack {
  /** What the review found, or the variant tried. */
  what: string
  files: Record<string, Spec>
  /** The file the refusal must name. */
  file: string
  /** Shell run as root after the refused install: exit 0 means the attack had no effect. */
  noEffect?: string
}

const polkitPolicy = (id: string, body = '', any = 'yes'): string => `<?xml version="1.0"?>
<policyconfig><action id="${id}"><description>x</description><message>x</message>
<defaults><allow_any>${any}</allow_any><allow_inactive>${any}</allow_inactive><allow_active>${any}</allow_active></defaults>${body}</action></policyconfig>
`
const busPolicy = (rules: string): string => `<?xml version="1.0"?>
<busconfig><policy user="root"><allow own="${NAME}"/></policy>${rules}</busconfig>
`
/** Tester asks the system bus for a host service's name; exit 0 = denied (the attack failed). */
const cannotOwn = (name: string): string =>
  `runuser -u ${TESTER.name} -- python3 -c "import dbus,sys; b=dbus.SystemBus()
try: b.request_name('${name}')
except dbus.DBusException as e: sys.exit(0 if 'AccessDenied' in e.get_dbus_name() else 2)
sys.exit(1)"`
const absent = (...paths: string[]): string => paths.map((p) => `test ! -e ${p} && test ! -L ${p}`).join(' && ')

const ATTACKS: Attack[] = [
  {what: 'PATH shadowing: usr/sbin/ls', files: {'usr/sbin/ls': {exe: EXE}}, file: 'usr/sbin/ls', noEffect: `ls / >/dev/null && ${absent('/usr/sbin/ls', '/run/pwned')}`},
  {what: 'PATH shadowing: usr/local/sbin/cat', files: {'usr/local/sbin/cat': {exe: EXE}}, file: 'usr/local/sbin/cat', noEffect: `cat /etc/hostname >/dev/null 2>&1; ${absent('/usr/local/sbin/cat', '/run/pwned')}`},
  {what: 'PATH shadowing: usr/local/bin/sudo', files: {'usr/local/bin/sudo': {exe: EXE}}, file: 'usr/local/bin/sudo', noEffect: absent('/usr/local/bin/sudo')},
  {what: 'symlink over the host generators directory', files: {'usr/lib/systemd/system-generators': {symlink: '../../libexec/sysext-helper-test/gen'}, 'usr/libexec/sysext-helper-test/gen/evil': {exe: EXE}},
    file: 'usr/lib/systemd/system-generators', noEffect: `systemctl daemon-reload && test -d /usr/lib/systemd/system-generators && test ! -L /usr/lib/systemd/system-generators && ${absent('/run/pwned')}`},
  {what: 'symlink over polkit rules.d', files: {'usr/share/polkit-1/rules.d': {symlink: '../../libexec/sysext-helper-test/rules'}, 'usr/libexec/sysext-helper-test/rules/00-evil.rules': 'polkit.addRule(function(a, s) { return polkit.Result.YES; });\n'},
    file: 'usr/share/polkit-1/rules.d', noEffect: 'test -d /usr/share/polkit-1/rules.d && test ! -L /usr/share/polkit-1/rules.d'},
  {what: 'a regular file over the system-services directory', files: {'usr/share/dbus-1/system-services': 'hidden\n'}, file: 'usr/share/dbus-1/system-services', noEffect: 'test -d /usr/share/dbus-1/system-services'},
  {what: 'a generator under usr/local', files: {'usr/local/lib/systemd/system-generators/evil': {exe: EXE}}, file: 'usr/local/lib/systemd/system-generators/evil', noEffect: `systemctl daemon-reload && ${absent('/run/pwned', '/usr/local/lib/systemd/system-generators/evil')}`},
  {what: 'a drop-in for every service', files: {'usr/lib/systemd/system/service.d/evil.conf': '[Service]\nExecStartPost=/bin/touch /run/pwned\n'}, file: 'usr/lib/systemd/system/service.d/evil.conf',
    noEffect: `systemctl daemon-reload && systemctl restart systemd-hostnamed && ${absent('/run/pwned', '/usr/lib/systemd/system/service.d')}`},
  {what: 'a drop-in for a host unit', files: {'usr/lib/systemd/system/dbus.service.d/evil.conf': '[Service]\nExecStartPost=/bin/touch /run/pwned\n'}, file: 'usr/lib/systemd/system/dbus.service.d/evil.conf', noEffect: absent('/usr/lib/systemd/system/dbus.service.d')},
  {what: 'polkit rules under usr/local/share', files: {'usr/local/share/polkit-1/rules.d/00-evil.rules': 'polkit.addRule(function(a, s) { return polkit.Result.YES; });\n'}, file: 'usr/local/share/polkit-1/rules.d/00-evil.rules', noEffect: absent('/usr/local/share/polkit-1')},
  {what: 'redefining the host action org.freedesktop.systemd1.manage-units', files: {'usr/share/polkit-1/actions/zz-evil.policy': polkitPolicy('org.freedesktop.systemd1.manage-units')},
    file: 'usr/share/polkit-1/actions/zz-evil.policy', noEffect: `! runuser -u ${TESTER.name} -- systemd-run --wait --quiet /bin/true 2>/dev/null && ${absent('/usr/share/polkit-1/actions/zz-evil.policy')}`},
  {what: 'implying a host action', files: {'usr/share/polkit-1/actions/org.sysexthelper.evil.policy': polkitPolicy('org.sysexthelper.evil.x', '<annotate key="org.freedesktop.policykit.imply">org.freedesktop.systemd1.manage-units</annotate>')},
    file: 'usr/share/polkit-1/actions/org.sysexthelper.evil.policy', noEffect: '! pkaction --action-id org.sysexthelper.evil.x >/dev/null 2>&1'},
  {what: 'pkexec of a host shell', files: {'usr/share/polkit-1/actions/org.sysexthelper.bash.policy': polkitPolicy('org.sysexthelper.bash', '<annotate key="org.freedesktop.policykit.exec.path">/usr/bin/bash</annotate>')},
    file: 'usr/share/polkit-1/actions/org.sysexthelper.bash.policy', noEffect: '! pkaction --action-id org.sysexthelper.bash >/dev/null 2>&1'},
  {what: 'bus policy: own_prefix org.freedesktop for everyone', files: {'usr/share/dbus-1/system.d/zz-evil.conf': busPolicy('<policy context="default"><allow own_prefix="org.freedesktop"/></policy>')},
    file: 'usr/share/dbus-1/system.d/zz-evil.conf', noEffect: cannotOwn('org.freedesktop.timedate1')},
  {what: 'bus policy: method calls to anything', files: {'usr/share/dbus-1/system.d/zz-evil.conf': busPolicy('<policy context="default"><allow send_type="method_call"/></policy>')}, file: 'usr/share/dbus-1/system.d/zz-evil.conf'},
  {what: 'bus policy: a user may send anywhere', files: {'usr/share/dbus-1/system.d/zz-evil.conf': busPolicy(`<policy user="${TESTER.name}"><allow send_destination="*"/><allow own="org.freedesktop.timedate1"/></policy>`)},
    file: 'usr/share/dbus-1/system.d/zz-evil.conf', noEffect: cannotOwn('org.freedesktop.timedate1')},
  {what: 'bus policy: a mandatory context', files: {'usr/share/dbus-1/system.d/zz-evil.conf': busPolicy('<policy context="mandatory"><allow send_destination_prefix="org"/></policy>')}, file: 'usr/share/dbus-1/system.d/zz-evil.conf'},
  {what: 'bus policy: an includedir', files: {'usr/share/dbus-1/system.d/zz-evil.conf': busPolicy('<includedir>/var/tmp/evil</includedir>')}, file: 'usr/share/dbus-1/system.d/zz-evil.conf'},
  {what: 'a service file for a host name', files: {'usr/share/dbus-1/system-services/org.freedesktop.timedate1.service': '[D-BUS Service]\nName=org.freedesktop.timedate1\nExec=/bin/false\nUser=root\n'},
    file: 'usr/share/dbus-1/system-services/org.freedesktop.timedate1.service'},
  {what: 'a .wants link: starts at boot with no client', files: {'usr/lib/systemd/system/multi-user.target.wants/sysext-helper-test1.service': {symlink: '../sysext-helper-test1.service'}},
    file: 'usr/lib/systemd/system/multi-user.target.wants/sysext-helper-test1.service', noEffect: absent('/usr/lib/systemd/system/multi-user.target.wants/sysext-helper-test1.service')},
  {what: 'a timer unit', files: {'usr/lib/systemd/system/sysext-helper-test1.timer': '[Timer]\nOnBootSec=1\n[Install]\nWantedBy=timers.target\n'}, file: 'usr/lib/systemd/system/sysext-helper-test1.timer'},
  {what: 'a unit that stops a host unit', files: {'usr/lib/systemd/system/sysext-helper-evil.service': '[Unit]\nConflicts=dbus.service\n[Service]\nExecStart=/bin/true\n'}, file: 'usr/lib/systemd/system/sysext-helper-evil.service'},
  {what: 'a Python .pth file (runs in every Python, root\'s too)', files: {'usr/lib/python3/dist-packages/zz-evil.pth': 'import os; open("/run/pwned", "w")\n'},
    file: 'usr/lib/python3/dist-packages/zz-evil.pth', noEffect: `python3 -c pass && ${absent('/run/pwned', '/usr/lib/python3/dist-packages/zz-evil.pth')}`},
  {what: 'a Perl module', files: {'usr/share/perl5/Evil.pm': '1;\n'}, file: 'usr/share/perl5/Evil.pm'},
  {what: 'an NSS module', files: {'usr/lib/x86_64-linux-gnu/libnss_evil.so.2': 'x'}, file: 'usr/lib/x86_64-linux-gnu/libnss_evil.so.2'},
  {what: 'a PAM module', files: {'usr/lib/x86_64-linux-gnu/security/pam_evil.so': 'x'}, file: 'usr/lib/x86_64-linux-gnu/security/pam_evil.so'},
  {what: 'a gconv module', files: {'usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d/evil.conf': 'x'}, file: 'usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d/evil.conf'},
  {what: 'modprobe.d', files: {'usr/lib/modprobe.d/evil.conf': 'install dummy /bin/sh\n'}, file: 'usr/lib/modprobe.d/evil.conf'},
  {what: 'sysctl.d', files: {'usr/lib/sysctl.d/99-evil.conf': 'kernel.core_pattern=|/bin/sh\n'}, file: 'usr/lib/sysctl.d/99-evil.conf'},
  {what: 'binfmt.d', files: {'usr/lib/binfmt.d/evil.conf': ':evil:E::evil::/bin/sh:\n'}, file: 'usr/lib/binfmt.d/evil.conf'},
  {what: 'environment.d', files: {'usr/lib/environment.d/99-evil.conf': 'LD_PRELOAD=/usr/lib/evil.so\n'}, file: 'usr/lib/environment.d/99-evil.conf'},
  {what: 'tmpfiles.d', files: {'usr/lib/tmpfiles.d/evil.conf': 'L+ /etc/evil - - - - /etc/shadow\n'}, file: 'usr/lib/tmpfiles.d/evil.conf'},
  {what: 'a session-bus service', files: {'usr/share/dbus-1/services/org.sysexthelper.Evil.service': '[D-BUS Service]\nName=org.sysexthelper.Evil\nExec=/bin/sh\n'}, file: 'usr/share/dbus-1/services/org.sysexthelper.Evil.service'},
  {what: 'a user unit', files: {'usr/lib/systemd/user/evil.service': '[Service]\nExecStart=/bin/sh\n'}, file: 'usr/lib/systemd/user/evil.service'},
  {what: 'a udev rule', files: {'usr/lib/udev/rules.d/99-evil.rules': 'RUN+="/bin/touch /run/pwned"\n'}, file: 'usr/lib/udev/rules.d/99-evil.rules'},
  {what: 'hwdb', files: {'usr/lib/udev/hwdb.d/99-evil.hwdb': 'evdev:*\n KEYBOARD_KEY_1=x\n'}, file: 'usr/lib/udev/hwdb.d/99-evil.hwdb'},
  {what: 'a kernel-install hook', files: {'usr/lib/kernel/install.d/99-evil.install': {exe: EXE}}, file: 'usr/lib/kernel/install.d/99-evil.install'},
  {what: 'a Flatpak trigger (runs as root after every flatpak operation)', files: {'usr/share/flatpak/triggers/evil.trigger': {exe: EXE}}, file: 'usr/share/flatpak/triggers/evil.trigger'},
  {what: 'a service file whose activation starts a host unit (a root shell on tty9)', files: {'usr/share/dbus-1/system-services/org.sysexthelper.Shell.service': '[D-BUS Service]\nName=org.sysexthelper.Shell\nExec=/bin/false\nUser=root\nSystemdService=debug-shell.service\n'},
    file: 'usr/share/dbus-1/system-services/org.sysexthelper.Shell.service',
    noEffect: `runuser -u ${TESTER.name} -- busctl call org.sysexthelper.Shell / org.freedesktop.DBus.Peer Ping >/dev/null 2>&1; ! systemctl is-active --quiet debug-shell.service`},
  {what: 'the service pulls in a host unit when activated', files: {'usr/lib/systemd/system/sysext-helper-test1.service': '[Unit]\nWants=debug-shell.service\n[Service]\nType=dbus\nBusName=org.sysexthelper.Test1\nExecStart=/usr/libexec/sysext-helper-test/test1-service\n'},
    file: 'usr/lib/systemd/system/sysext-helper-test1.service', noEffect: '! systemctl is-active --quiet debug-shell.service'},
  {what: 'a .wants entry naming a host unit', files: {'usr/lib/systemd/system/multi-user.target.wants/debug-shell.service': ''}, file: 'usr/lib/systemd/system/multi-user.target.wants/debug-shell.service'},
  {what: 'a symlink to a host file', files: {'usr/libexec/sysext-helper-test/shadow': {symlink: '/etc/shadow'}}, file: 'usr/libexec/sysext-helper-test/shadow'},
]

/** The test service tree plus the attack's files, built here and copied into the guest root-owned. */
function attackTree(attack: Attack): string {
  const dir = mkdtempSync(join(tmpdir(), 'sysext-attack-'))
  cpSync(fixturePath('good'), dir, {recursive: true})
  for (const [rel, spec] of Object.entries(attack.files)) {
    const abs = join(dir, rel)
    mkdirSync(dirname(abs), {recursive: true})
    rmSync(abs, {recursive: true, force: true}) // an attack may replace what the fixture has there
    if (typeof spec === 'string') writeFileSync(abs, spec)
    else if ('symlink' in spec) symlinkSync(spec.symlink, abs)
    else {
      writeFileSync(abs, spec.exe)
      chmodSync(abs, 0o755)
    }
  }
  return dir
}

/** The host as install could change it: links, stages, state, the merged set and the merged /usr. */
async function snapshot(host: Host): Promise<string> {
  return (await host.sh('ls -l /var/lib/extensions /etc/extensions /run/extensions 2>/dev/null; ls /var/lib/sysext-helper/stage 2>/dev/null; cat /var/lib/sysext-helper/state.json 2>/dev/null; cat /usr/.systemd-sysext/extensions 2>/dev/null; ls -R /usr/share/dbus-1 /usr/share/polkit-1 /usr/lib/systemd/system | md5sum')).stdout
}

for (const flavor of FLAVORS) {
  describe(`confinement on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    let baseline: string
    before(async () => {
      host = await bootHost(flavor)
      baseline = await snapshot(host)
    })
    after(async () => {
      await host?.stop()
    })

    test(`every attack class is refused by validate and install, and has no effect (${ATTACKS.length} trees)`, async () => {
      const failures: string[] = []
      for (const [i, attack] of ATTACKS.entries()) {
        const local = attackTree(attack)
        const guest = `/var/tmp/attack-${i}`
        execFileSync('cp', ['-a', local, join(host.root, guest)])
        rmSync(local, {recursive: true, force: true})
        const v = await host.cli(['validate', guest, '--name', NAME, '--json'])
        const report = v.stdout.trim() ? JSON.parse(v.stdout) : undefined
        const named = report?.findings.filter((f: {file: string; severity: string}) => f.file === attack.file && f.severity === 'error') ?? []
        if (v.exitCode !== 1 || named.length === 0) failures.push(`${attack.what}: validate exit ${v.exitCode}, errors on ${attack.file}: ${named.length} ${v.stderr}`)
        const inst = await host.cli(['install', guest, '--name', NAME, '--json'], {timeout: 120_000})
        const error = inst.stdout.trim() ? JSON.parse(inst.stdout).error : undefined
        if (inst.exitCode !== 1 || error?.code !== 'INSTALL_INVALID') failures.push(`${attack.what}: install exit ${inst.exitCode} ${error?.code}`)
        if ((await snapshot(host)) !== baseline) failures.push(`${attack.what}: the host changed`)
        if (attack.noEffect) {
          const effect = await host.sh(attack.noEffect)
          if (effect.exitCode !== 0) failures.push(`${attack.what}: the attack took effect (${effect.stdout}${effect.stderr})`)
        }
        await host.sh(`rm -rf ${guest} /run/pwned`)
      }
      assert.deepEqual(failures, [])
    })

    test('the test service itself installs, answers, and uninstalls (the allow-list keeps what it needs)', async () => {
      const r = await host.cli(['install', fixturePath('good'), '--name', NAME, '--json'], {timeout: 180_000})
      assert.equal(r.exitCode, 0, r.stderr + r.stdout)
      const call = await host.exec('busctl', ['call', NAME, '/org/sysexthelper/Test1', NAME, 'Hello'], {user: TESTER.name})
      assert.equal(call.stdout.trim(), 's "hello from test1"', call.stderr)
      assert.equal((await host.cli(['uninstall', NAME])).exitCode, 0)
    })

    // Real packages that need more than their own on-demand service: rtkit ships a command (rtkitctl) and
    // [Install] sections; accountsservice an [Install] section. Their Debian files, unchanged.
    const PACKAGES = [
      {pkg: 'rtkit', extras: ['commands', 'boot-units'], user: 'rtkit',
        call: ['busctl', 'get-property', 'org.freedesktop.RealtimeKit1', '/org/freedesktop/RealtimeKit1', 'org.freedesktop.RealtimeKit1', 'MaxRealtimePriority'], answer: /^i \d+$/},
      {pkg: 'accountsservice', extras: ['boot-units'], user: undefined,
        call: ['busctl', 'call', 'org.freedesktop.Accounts', '/org/freedesktop/Accounts', 'org.freedesktop.Accounts', 'FindUserByName', 's', TESTER.name], answer: /^o "\/org\/freedesktop\/Accounts\/User1000"$/},
    ]
    for (const p of PACKAGES) {
      test(`real Debian package ${p.pkg}: refused without its extras, installed and answering with --allow ${p.extras.join(' --allow ')}`, async () => {
        const guest = `/var/tmp/deb-${p.pkg}`
        execFileSync('cp', ['-a', debianPackageTree(p.pkg), join(host.root, guest)])
        // What Debian's maintainer scripts would have done (a system user; issue "validator agrees" covers sysusers.d).
        if (p.user) await host.execOk('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', p.user])
        const refused = await host.cli(['install', guest, '--name', p.pkg, '--json'], {timeout: 120_000})
        assert.equal(refused.exitCode, 1, refused.stdout)
        const findings = JSON.parse(refused.stdout).error.data.findings as Array<{rule: string; file: string}>
        assert.ok(findings.some((f) => f.rule === 'confine-extra' || f.rule === 'unit-install'), JSON.stringify(findings))
        assert.ok(findings.every((f) => f.rule === 'confine-extra' || f.rule === 'unit-install'), `only the ungranted extras refuse it: ${JSON.stringify(findings)}`)
        const args = ['install', guest, '--name', p.pkg, ...p.extras.flatMap((e) => ['--allow', e]), '--json']
        const installed = await host.cli(args, {timeout: 180_000})
        assert.equal(installed.exitCode, 0, installed.stderr + installed.stdout)
        const call = await host.exec(p.call[0], p.call.slice(1), {user: TESTER.name})
        assert.match(call.stdout.trim(), p.answer, call.stderr)
        const listed = JSON.parse((await host.cli(['list', '--json'])).stdout).extensions.find((e: {name: string}) => e.name === p.pkg)
        assert.deepEqual(listed.allow, p.extras)
        // A re-install without --allow keeps the extras recorded for it (an unchanged no-op).
        assert.equal((await host.cli(['install', guest, '--name', p.pkg])).exitCode, 0)
        assert.equal((await host.cli(['uninstall', p.pkg])).exitCode, 0)
      })
    }
  })
}
