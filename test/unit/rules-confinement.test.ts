/**
 * Confinement: the allow-list of what an app's extension may contain. Every
 * attack class found by the security review, and variants of each, must be
 * refused with an error naming the file; the legitimate trees must pass.
 */
import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {EXTRAS, classify, ownNames} from '../../src/sysext/rules/confinement.js'
import {loadHost} from '../../src/sysext/host.js'
import {scanTree} from '../../src/sysext/tree.js'
import {DEBIAN_12, type FileSpec, REPO_ROOT, makeHostRoot, makeTree} from '../lib/fixtures.js'
import {findingsFor} from '../lib/validate.js'

const NAME = 'org.example.App1'
const EXE = {content: '#!/bin/sh\n', mode: 0o755}
const REL = {[`usr/lib/extension-release.d/extension-release.${NAME}`]: 'ID=_any\n'}

/** A host with the directories an attacker aims at, as a real Debian has them. */
const HOST: Record<string, FileSpec> = {
  'bin/sh': {content: '', mode: 0o755},
  'usr/bin/ls': {content: '', mode: 0o755},
  'usr/lib/systemd/system-generators/systemd-getty-generator': {content: '', mode: 0o755},
  'usr/share/polkit-1/rules.d/50-default.rules': 'x',
  'usr/share/dbus-1/system-services/org.freedesktop.timedate1.service': '[D-BUS Service]\nName=org.freedesktop.timedate1\n',
  'usr/lib/python3/dist-packages/README': 'x',
  'usr/lib/x86_64-linux-gnu/libc.so.6': 'x',
  'usr/sbin/sshd': {content: '', mode: 0o755},
}
const hostRoot = makeHostRoot(DEBIAN_12, HOST)

/** Validates REL + `files` on HOST; returns the rules that fired on `file`, errors only. */
function errorsOn(files: Record<string, FileSpec>, file: string, allow: string[] = []): string[] {
  const findings = findingsFor(makeTree({...REL, ...files}), {name: NAME, hostRoot, allow})
  return findings.filter((f) => f.file === file && f.severity === 'error').map((f) => f.rule)
}

function assertRefused(files: Record<string, FileSpec>, file: string, rule: string, allow: string[] = []): void {
  const rules = errorsOn(files, file, allow)
  assert.ok(rules.includes(rule), `${file}: expected ${rule}, got ${JSON.stringify(rules)}`)
}

describe('confine-path: only the roles of an on-demand service', () => {
  const attacks: Array<[string, FileSpec]> = [
    ['usr/lib/systemd/system-generators/evil', EXE],
    ['usr/local/lib/systemd/system-generators/evil', EXE],
    ['usr/lib/systemd/system-environment-generators/evil', EXE],
    ['usr/lib/systemd/user-generators/evil', EXE],
    ['usr/lib/systemd/system/service.d/evil.conf', '[Service]\nExecStartPost=/bin/sh -c id\n'],
    ['usr/lib/systemd/system/ssh.service.d/evil.conf', '[Service]\nExecStartPre=/bin/sh\n'],
    ['usr/lib/systemd/user/evil.service', '[Service]\nExecStart=/bin/sh\n'],
    ['usr/lib/systemd/system-shutdown/evil', EXE],
    ['usr/lib/systemd/system-sleep/evil', EXE],
    ['usr/lib/systemd/system-preset/00-evil.preset', 'enable *\n'],
    ['usr/share/polkit-1/rules.d/00-evil.rules', 'polkit.addRule(function() { return polkit.Result.YES; });\n'],
    ['usr/local/share/polkit-1/rules.d/00-evil.rules', 'polkit.addRule(function() { return polkit.Result.YES; });\n'],
    ['usr/local/share/polkit-1/actions/evil.policy', '<policyconfig/>'],
    ['usr/local/share/dbus-1/system.d/evil.conf', '<busconfig/>'],
    ['usr/share/dbus-1/services/org.example.Session.service', '[D-BUS Service]\nName=org.example.Session\nExec=/bin/sh\n'],
    ['usr/share/dbus-1/session.d/evil.conf', '<busconfig/>'],
    ['usr/lib/udev/rules.d/99-evil.rules', 'RUN+="/bin/sh"\n'],
    ['usr/lib/udev/hwdb.d/99-evil.hwdb', 'evdev:*\n'],
    ['usr/lib/modprobe.d/evil.conf', 'install loop /bin/sh\n'],
    ['usr/lib/modules-load.d/evil.conf', 'evil\n'],
    ['usr/lib/sysctl.d/99-evil.conf', 'kernel.core_pattern=|/bin/sh\n'],
    ['usr/lib/binfmt.d/evil.conf', ':evil:E::evil::/bin/sh:\n'],
    ['usr/lib/tmpfiles.d/evil.conf', 'L+ /etc/shadow - - - - /tmp/x\n'],
    ['usr/lib/sysusers.d/evil.sh', 'u root 0\n'], // *.conf there is a role, held by the sysusers-* rules
    ['usr/lib/environment.d/99-evil.conf', 'LD_PRELOAD=/usr/lib/evil.so\n'],
    ['usr/lib/kernel/install.d/99-evil.install', EXE],
    ['usr/lib/pam.d/sudo', 'auth sufficient pam_permit.so\n'],
    ['usr/lib/x86_64-linux-gnu/security/pam_evil.so', 'x'],
    ['usr/lib/x86_64-linux-gnu/libnss_mymachines.so.2', 'x'],
    ['usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d/evil.conf', 'x'],
    ['usr/lib/x86_64-linux-gnu/libevil.so.1', 'x'],
    ['usr/lib/python3/dist-packages/evil.pth', 'import os; os.system("id")\n'],
    ['usr/lib/python3.11/sitecustomize.py', 'import os\n'],
    ['usr/share/perl5/strict.pm', 'x'],
    ['usr/lib/x86_64-linux-gnu/perl5/5.36/evil.pm', 'x'],
    ['usr/share/flatpak/triggers/evil.trigger', EXE],
    ['usr/share/applications/evil.desktop', '[Desktop Entry]\n'],
    ['usr/share/glib-2.0/schemas/evil.gschema.override', 'x'],
    ['usr/share/bash-completion/completions/evil', 'x'],
    ['usr/local/lib/evil.so', 'x'],
    ['usr/etc/profile.d/evil.sh', 'x'],
    ['usr/share/factory/etc/shadow', 'x'],
    ['usr/lib/NetworkManager/dispatcher.d/evil', EXE],
    ['usr/lib/apt/apt.conf.d/evil', 'x'],
    ['usr/lib/cron/evil', 'x'],
    ['usr/lib/ssh/evil', 'x'],
    ['usr/share/org.example.Other/data', 'x'],
    ['opt/evil/bin/x', EXE],
  ]
  for (const [file, spec] of attacks) {
    test(file, () => {
      const rules = errorsOn({[file]: spec}, file)
      assert.ok(rules.includes('confine-path') || rules.includes('confine-extra'), `${file}: ${JSON.stringify(rules)}`)
    })
  }
  test('the message says why the host would act on it, and the hint what may be shipped', () => {
    const f = findingsFor(makeTree({...REL, 'usr/lib/systemd/system-generators/evil': EXE}), {name: NAME, hostRoot})
      .find((x) => x.rule === 'confine-path' && x.file === 'usr/lib/systemd/system-generators/evil')
    assert.ok(f)
    assert.match(f.message, /systemd runs generators as root at every boot and daemon-reload/)
    assert.match(f.hint, /usr\/libexec\/NEW-NAME/)
  })
  test('an empty directory that holds nothing allowed is refused too', () => {
    assertRefused({'usr/lib/systemd/system-generators': {dir: true}}, 'usr/lib/systemd/system-generators', 'confine-path')
  })
  test('usr/libexec only under a name the host does not have', () => {
    const hostWithLibexec = makeHostRoot(DEBIAN_12, {...HOST, 'usr/libexec/polkit-agent-helper-1': {content: '', mode: 0o755}, 'usr/libexec/hooks/a': EXE})
    const f = findingsFor(makeTree({...REL, 'usr/libexec/hooks/evil': EXE, 'usr/libexec/mine/helper': EXE}), {name: NAME, hostRoot: hostWithLibexec})
    assert.ok(f.some((x) => x.rule === 'confine-path' && x.file === 'usr/libexec/hooks/evil'))
    assert.ok(!f.some((x) => x.file === 'usr/libexec/mine/helper' && x.severity === 'error'))
  })
})

describe('confine-extra: granted by name, per extension', () => {
  test('new commands on PATH need the commands extra (PATH shadowing)', () => {
    for (const file of ['usr/sbin/ls', 'usr/local/sbin/cat', 'usr/local/bin/sudo', 'usr/bin/evil']) {
      assertRefused({[file]: EXE}, file, 'confine-extra')
      assert.ok(!errorsOn({[file]: EXE}, file, ['commands']).includes('confine-extra'), file)
    }
  })
  test('a Flatpak trigger needs flatpak-triggers; a .path unit and a .wants link need boot-units', () => {
    assertRefused({'usr/share/flatpak/triggers/x.trigger': EXE}, 'usr/share/flatpak/triggers/x.trigger', 'confine-extra')
    const wants = 'usr/lib/systemd/system/multi-user.target.wants/org.example.App1.service'
    const files = {
      'usr/lib/systemd/system/org.example.App1.service': '[Service]\nExecStart=/usr/libexec/app1/helper\n',
      'usr/libexec/app1/helper': EXE,
      [wants]: {symlink: '../org.example.App1.service'},
    }
    assert.deepEqual(errorsOn(files, wants), ['confine-extra'], 'one finding: the link, not also its target')
    assert.deepEqual(errorsOn(files, wants, ['boot-units']), [])
  })
  test('every extra is described for the rules listing and the --allow help', () => {
    assert.deepEqual(Object.keys(EXTRAS).sort(), ['boot-units', 'commands', 'flatpak-triggers'])
  })
})

describe('confine-path: names that only look like the extension\'s own', () => {
  test('a .wants entry naming a unit the extension does not ship is refused even with boot-units (systemd reads only its name)', () => {
    const file = 'usr/lib/systemd/system/multi-user.target.wants/debug-shell.service'
    assertRefused({[file]: ''}, file, 'confine-path', ['boot-units'])
  })
  test('an own directory where the host (or a program it installs later) reads by itself', () => {
    const findings = findingsFor(makeTree({'usr/lib/extension-release.d/extension-release.python3': 'ID=_any\n', 'usr/lib/python3/dist-packages/zz.pth': 'import os\n'}),
      {name: 'python3', hostRoot: makeHostRoot(DEBIAN_12)})
    assert.ok(findings.some((f) => f.rule === 'confine-path' && f.file === 'usr/lib/python3/dist-packages/zz.pth'), JSON.stringify(findings))
  })
  test('a unit name does not make a directory the extension\'s own (the tree picks unit names freely)', () => {
    const files = {
      'usr/lib/systemd/system/vim.service': '[Service]\nExecStart=/usr/libexec/app1/helper\n',
      'usr/libexec/app1/helper': EXE,
      'usr/share/vim/vimfiles/plugin/evil.vim': 'x',
    }
    assertRefused(files, 'usr/share/vim/vimfiles/plugin/evil.vim', 'confine-path')
  })
  test('a translation of a host text domain (sudo.mo in a language the host lacks) is refused; a new domain is fine', () => {
    const host = makeHostRoot(DEBIAN_12, {'usr/share/locale/de/LC_MESSAGES/sudo.mo': 'x'})
    const findings = findingsFor(makeTree({...REL, 'usr/share/locale/xx/LC_MESSAGES/sudo.mo': 'x', 'usr/share/locale/de/LC_MESSAGES/org.example.App1.mo': 'x'}), {name: NAME, hostRoot: host})
    assert.ok(findings.some((f) => f.rule === 'confine-path' && f.file === 'usr/share/locale/xx/LC_MESSAGES/sudo.mo' && /text domain of the host/.test(f.message)))
    assert.ok(!findings.some((f) => f.file === 'usr/share/locale/de/LC_MESSAGES/org.example.App1.mo'))
  })
})

describe('confine-host-type: never replace or hide a host entry of another type', () => {
  test('a symlink or a file where the host has a directory', () => {
    assertRefused({'usr/lib/systemd/system-generators': {symlink: '../../libexec/app1'}, 'usr/libexec/app1/x': EXE}, 'usr/lib/systemd/system-generators', 'confine-host-type')
    assertRefused({'usr/share/polkit-1/rules.d': {symlink: '/usr/share/org.example.App1/rules'}, 'usr/share/org.example.App1/rules/x.rules': 'x'}, 'usr/share/polkit-1/rules.d', 'confine-host-type')
    assertRefused({'usr/share/dbus-1/system-services': 'x'}, 'usr/share/dbus-1/system-services', 'confine-host-type')
  })
  test('a directory where the host has a file', () => {
    assertRefused({'usr/bin/ls/x': 'x'}, 'usr/bin/ls', 'confine-host-type')
  })
})

describe('confine-symlink: links lead only to the extension\'s own files', () => {
  test('to a host directory, a host file, outside usr/, into the sandbox, or nowhere', () => {
    const links: Array<[string, string]> = [
      ['usr/libexec/app1/lib', '/usr/lib'],
      ['usr/libexec/app1/sh', '/bin/sh'],
      ['usr/libexec/app1/escape', '../../../etc/shadow'],
      ['usr/libexec/app1/sandbox', '/app/bin/helper'],
      ['usr/libexec/app1/dangling', '/var/tmp/later'],
    ]
    for (const [file, target] of links) assertRefused({[file]: {symlink: target}, 'usr/libexec/app1/real': EXE}, file, 'confine-symlink')
  })
  test('a relative link to a file the tree ships is fine', () => {
    assert.deepEqual(errorsOn({'usr/libexec/app1/alias': {symlink: 'real'}, 'usr/libexec/app1/real': EXE}, 'usr/libexec/app1/alias'), [])
  })
  test('the sandbox-only target is named as such', () => {
    const f = findingsFor(makeTree({...REL, 'usr/libexec/app1/x': {symlink: '/app/bin/helper'}}), {name: NAME, hostRoot}).find((x) => x.rule === 'confine-symlink')
    assert.match(f?.message ?? '', /exists only inside the Flatpak sandbox/)
  })
})

describe('classify', () => {
  test('the roles of a complete on-demand service', () => {
    const tree = scanTree(makeTree({
      ...REL,
      'usr/share/dbus-1/system-services/org.example.App1.service': '[D-BUS Service]\nName=org.example.App1\n',
      'usr/share/dbus-1/system.d/org.example.App1.conf': '<busconfig/>',
      'usr/share/polkit-1/actions/org.example.App1.policy': '<policyconfig/>',
      'usr/lib/systemd/system/org.example.App1.service': '[Service]\n',
      'usr/libexec/org.example.App1-helper': EXE,
      'usr/lib/org.example.App1/libpriv.so': 'x',
      'usr/share/doc/org.example.App1/copyright': 'x',
      'usr/share/man/man8/org.example.App1-helper.8.gz': 'x',
    }))
    const ctx = {tree, host: loadHost(hostRoot), name: NAME, origin: 'path' as const}
    const own = ownNames(tree, NAME)
    const kinds = [...tree.entries.values()].filter((e) => e.type !== 'dir' && e.path.startsWith('usr/')).map((e) => [e.path, classify(e, ctx, own).kind])
    assert.deepEqual(kinds.filter(([, kind]) => kind !== 'role'), [])
  })
})

describe('legitimate trees stay valid', () => {
  test('the e2e fixture extension validates with no error', () => {
    // Judged against this machine (it has the fixture's python3); install generates the release file.
    const f = findingsFor(`${REPO_ROOT}/test/fixtures/e2e/good`, {name: 'sysext-helper-test', hostRoot: '/'})
    assert.deepEqual(f.filter((x) => x.severity === 'error').map((x) => [x.rule, x.file]), [['release-missing', 'usr/lib/extension-release.d/extension-release.sysext-helper-test']])
  })
})
