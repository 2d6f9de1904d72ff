import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import type {Finding} from '../../src/sysext/findings.js'
import {unitsRules} from '../../src/sysext/rules/units.js'
import type {FileSpec} from '../lib/fixtures.js'
import {assertFinding, assertNo, checkRuleSet} from '../lib/validate.js'

const UNITS = 'usr/lib/systemd/system'
const FILE = `${UNITS}/org.example.App1.service`
const HELPER = {content: '#!/bin/sh\n', mode: 0o755}

/** A merged-/usr host with /usr/bin/true. */
const hostFiles: Record<string, FileSpec> = {'usr/bin/true': {content: '', mode: 0o755}, bin: {symlink: 'usr/bin'}}

const check = (files: Record<string, FileSpec>): Finding[] => checkRuleSet(unitsRules, files, hostFiles)

const unit = (service: string): string => `[Unit]\nDescription=Example helper\n\n[Service]\n${service}`
const GOOD_UNIT = unit('Type=dbus\nBusName=org.example.App1\nExecStartPre=-/usr/libexec/org.example.App1-prepare\nExecStart=/usr/libexec/org.example.App1-helper\nExecStartPost=true\n')
const good: Record<string, FileSpec> = {
  [FILE]: GOOD_UNIT,
  'usr/libexec/org.example.App1-helper': HELPER,
  'usr/libexec/org.example.App1-prepare': HELPER,
  'usr/share/dbus-1/system-services/org.example.App1.service':
    '[D-BUS Service]\nName=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=org.example.App1.service\n',
}

describe('unit rules: a correct unit', () => {
  test('produces no finding', () => {
    assert.deepEqual(check(good), [])
  })
  test('a socket unit, a timer and a oneshot without ExecStart but with ExecStop produce no finding', () => {
    assert.deepEqual(check({
      [`${UNITS}/app1.socket`]: '[Socket]\nListenStream=/run/app1.sock\nExecStartPre=/usr/libexec/org.example.App1-helper --prepare\n',
      [`${UNITS}/app1.timer`]: '[Timer]\nOnCalendar=daily\n',
      [`${UNITS}/app1.service`]: '[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStop=/usr/libexec/org.example.App1-helper --cleanup\n',
      'usr/libexec/org.example.App1-helper': HELPER,
    }), [])
  })
})

describe('unit file rules', () => {
  test('unit-unreadable', () => {
    assertFinding(check({...good, [FILE]: `${GOOD_UNIT}${'#'.repeat(1024 * 1024 + 1)}\n`}), 'unit-unreadable', 'error', FILE)
    assertNo(check(good), 'unit-unreadable')
  })

  test('unit-file-invalid: a broken section header makes systemd refuse the unit', () => {
    const findings = check({...good, [FILE]: '[Unit]\nDescription=x\n[Service\nExecStart=/usr/libexec/org.example.App1-helper\n'})
    assert.equal(assertFinding(findings, 'unit-file-invalid', 'error', FILE).message,
      "Line 3: Invalid section header '[Service'. systemd refuses to load the unit.")
    assert.equal(findings.length, 1, 'nothing else is judged in a unit systemd does not load')
    assertNo(check(good), 'unit-file-invalid')
  })

  test('unit-line-ignored: a line without =', () => {
    const findings = check({...good, [FILE]: `${GOOD_UNIT}Restart on-failure\n`})
    assert.match(assertFinding(findings, 'unit-line-ignored', 'warning', FILE).message, /^Line 10: Missing '='/)
    assertNo(check(good), 'unit-line-ignored')
  })

  test('unit-exec-invalid: a relative path systemd rejects', () => {
    const findings = check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=libexec/helper\n')})
    assert.equal(assertFinding(findings, 'unit-exec-invalid', 'error', FILE).message,
      'Line 6: ExecStart=libexec/helper: Neither a valid executable name nor an absolute path: libexec/helper; systemd refuses the command line.')
    assertNo(check(good), 'unit-exec-invalid')
  })

  test('unit-exec-missing: a binary in neither the tree nor the host', () => {
    const findings = check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/gone --flag\n')})
    assert.equal(assertFinding(findings, 'unit-exec-missing', 'error', FILE).message,
      'Line 6: ExecStart=/usr/libexec/gone --flag: /usr/libexec/gone does not exist in the tree or on the host; the unit fails with status 203/EXEC.')
    assertNo(check(good), 'unit-exec-missing')
  })

  test('unit-exec-missing: a bare name not on the search path, and a non-executable file', () => {
    const bare = check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\nExecReload=app1ctl reload\n')})
    assert.match(assertFinding(bare, 'unit-exec-missing', 'error', FILE).message, /app1ctl \(searched \/usr\/local\/sbin:.*:\/bin\) does not exist/)
    const plain = check({...good, 'usr/libexec/org.example.App1-helper': {content: '#!/bin/sh\n', mode: 0o644}})
    assert.match(assertFinding(plain, 'unit-exec-missing', 'error', FILE).message, /is not executable \(\/usr\/libexec\/org\.example\.App1-helper, mode 0644\)/)
  })

  test('unit-exec-missing: a bare name is found in the tree\'s usr/bin before the host', () => {
    assertNo(check({...good, 'usr/bin/app1ctl': HELPER, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\nExecReload=app1ctl reload\n')}), 'unit-exec-missing')
  })

  test('unit-exec-missing: ExecSearchPath= replaces the default search path', () => {
    const findings = check({...good, [FILE]: unit('BusName=org.example.App1\nExecSearchPath=/usr/libexec\nExecStart=org.example.App1-helper\nExecStartPost=true\n')})
    assert.match(assertFinding(findings, 'unit-exec-missing', 'error', FILE).message, /^Line 8: ExecStartPost=true: true \(searched \/usr\/libexec\)/)
  })

  test('unit-exec-missing: only a warning with the - prefix (systemd skips a missing command)', () => {
    const withoutPrepare = {...good}
    delete withoutPrepare['usr/libexec/org.example.App1-prepare']
    const findings = check(withoutPrepare)
    assert.match(assertFinding(findings, 'unit-exec-missing', 'warning', FILE).message, /systemd skips the command \('-' prefix\)\.$/)
  })

  test('commands with specifiers, via the shell or in another root are not resolved', () => {
    assertNo(check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\nExecStartPre=%h/bin/prepare\nExecStartPost=|echo done\n')}), 'unit-exec-missing')
    assertNo(check({...good, [FILE]: unit('BusName=org.example.App1\nRootDirectory=/var/lib/app1\nExecStart=/usr/bin/only-in-root\n')}), 'unit-exec-missing')
  })

  test('unit-service-exec-start: no ExecStart= at all', () => {
    const findings = check({...good, [FILE]: unit('Type=simple\n')})
    assert.equal(assertFinding(findings, 'unit-service-exec-start', 'error', FILE).message,
      'Service has no ExecStart=, ExecStop= or SuccessAction=. systemd refuses to load org.example.App1.service.')
    assertFinding(check({[FILE]: '[Unit]\nSuccessAction=none\n[Service]\nType=oneshot\n'}), 'unit-service-exec-start', 'error', FILE)
    assertNo(check({[FILE]: '[Unit]\nSuccessAction=reboot\n[Service]\nType=oneshot\n'}), 'unit-service-exec-start')
    assertNo(check(good), 'unit-service-exec-start')
  })

  test('unit-service-exec-start: two ExecStart= outside Type=oneshot; a reset in between is fine', () => {
    const two = check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\nExecStart=/usr/libexec/org.example.App1-helper --again\n')})
    assert.match(assertFinding(two, 'unit-service-exec-start', 'error', FILE).message, /has 2 ExecStart= lines \(lines 6, 7\), which only Type=oneshot allows \(Type=dbus\)/)
    assertNo(check({...good, [FILE]: unit('BusName=org.example.App1\nExecStart=/usr/libexec/gone\nExecStart=\nExecStart=/usr/libexec/org.example.App1-helper\n')}), 'unit-service-exec-start')
    assertNo(check({...good, [FILE]: unit('Type=oneshot\nExecStart=/usr/bin/true\nExecStart=/usr/bin/true\n')}), 'unit-service-exec-start')
  })

  test('unit-service-exec-start: ExecStop= only, outside Type=oneshot', () => {
    const findings = check({...good, [FILE]: unit('Type=simple\nExecStop=/usr/bin/true\n')})
    assert.match(assertFinding(findings, 'unit-service-exec-start', 'error', FILE).message, /^Service has no ExecStart=, which only Type=oneshot allows \(Type=simple\)/)
  })

  test('unit-dbus-bus-name-missing: Type=dbus without BusName=', () => {
    const findings = check({...good, [FILE]: unit('Type=dbus\nExecStart=/usr/libexec/org.example.App1-helper\n')})
    assertFinding(findings, 'unit-dbus-bus-name-missing', 'error', FILE)
    assertNo(check(good), 'unit-dbus-bus-name-missing')
  })

  test('unit-bus-name-invalid', () => {
    const findings = check({...good, [FILE]: unit('Type=dbus\nBusName=org.example.1App\nExecStart=/usr/libexec/org.example.App1-helper\n')})
    assert.match(assertFinding(findings, 'unit-bus-name-invalid', 'error', FILE).message, /^Line 6: BusName=org\.example\.1App has an invalid element '1App'.*and then refuses Type=dbus\.$/)
    assertNo(check(good), 'unit-bus-name-invalid')
  })

  test('unit-bus-name-not-activatable: no service file, or one that bypasses the unit', () => {
    const none = check({[FILE]: GOOD_UNIT, 'usr/libexec/org.example.App1-helper': HELPER, 'usr/libexec/org.example.App1-prepare': HELPER})
    assert.match(assertFinding(none, 'unit-bus-name-not-activatable', 'warning', FILE).message, /no D-Bus service file in the tree activates it/)
    const bypass = check({...good, 'usr/share/dbus-1/system-services/org.example.App1.service':
      '[D-BUS Service]\nName=org.example.App1\nExec=/usr/libexec/org.example.App1-helper\nUser=root\n'})
    assert.match(assertFinding(bypass, 'unit-bus-name-not-activatable', 'warning', FILE).message, /does not set SystemdService=org\.example\.App1\.service/)
    assertNo(check(good), 'unit-bus-name-not-activatable')
  })

  test('unit-bus-name-not-activatable: SystemdService= may name an Alias= of the unit', () => {
    assertNo(check({...good, [FILE]: `${GOOD_UNIT}[Install]\nAlias=dbus-org.example.App1.service\n`,
      'usr/share/dbus-1/system-services/org.example.App1.service':
        '[D-BUS Service]\nName=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=dbus-org.example.App1.service\n'}), 'unit-bus-name-not-activatable')
  })
})

describe('unit confinement rules', () => {
  const withHost = (files: Record<string, FileSpec>, host: Record<string, FileSpec>, allow: string[] = []) => checkRuleSet(unitsRules, files, {...hostFiles, ...host}, allow)
  test('unit-name-host: a unit name the host already has, in any of its unit directories', () => {
    for (const dir of ['usr/lib/systemd/system', 'etc/systemd/system', 'usr/local/lib/systemd/system']) {
      const f = assertFinding(withHost(good, {[`${dir}/org.example.App1.service`]: '[Service]\nExecStart=/bin/true\n'}), 'unit-name-host', 'error', FILE)
      assert.ok(f.message.includes(`/${dir}/org.example.App1.service`))
    }
    assertNo(check(good), 'unit-name-host')
  })
  test('unit-host-reference: the host already names the unit to start (a .wants link, a Wants= line)', () => {
    assert.match(assertFinding(withHost(good, {'etc/systemd/system/multi-user.target.wants/org.example.App1.service': {symlink: '/usr/lib/systemd/system/org.example.App1.service'}}),
      'unit-host-reference', 'error', FILE).message, /multi-user\.target\.wants\/org\.example\.App1\.service/)
    assert.match(assertFinding(withHost(good, {'usr/lib/systemd/system/host.service': '[Unit]\nWants=network.target org.example.App1.service\n[Service]\nExecStart=/bin/true\n'}),
      'unit-host-reference', 'error', FILE).message, /host\.service \(Wants=\)/)
    assertNo(check(good), 'unit-host-reference')
  })
  test('unit-install: [Install] enablement needs the boot-units extra', () => {
    const installed = {...good, [FILE]: `${GOOD_UNIT}\n[Install]\nWantedBy=multi-user.target\n`}
    assert.match(assertFinding(check(installed), 'unit-install', 'error', FILE).message, /^Line 12: \[Install\] WantedBy=multi-user\.target/)
    assertNo(withHost(installed, {}, ['boot-units']), 'unit-install')
    assertNo(check(good), 'unit-install')
  })
  test('unit-alias-host: an Alias= of a host unit, even with boot-units', () => {
    const aliased = {...good, [FILE]: `${GOOD_UNIT}\n[Install]\nAlias=dbus-org.freedesktop.login1.service\n`}
    const host = {'usr/lib/systemd/system/dbus-org.freedesktop.login1.service': '[Service]\nExecStart=/bin/true\n'}
    assertFinding(withHost(aliased, host, ['boot-units']), 'unit-alias-host', 'error', FILE)
    assertNo(withHost(good, host), 'unit-alias-host')
  })
  test('unit-affects-host: Conflicts=, OnFailure= and the like naming host units', () => {
    for (const key of ['Conflicts=ssh.service', 'OnFailure=reboot.target', 'PropagatesStopTo=dbus.service', 'Upholds=getty@tty1.service']) {
      const findings = check({...good, [FILE]: GOOD_UNIT.replace('[Service]', `${key}\n\n[Service]`)})
      assertFinding(findings, 'unit-affects-host', 'error', FILE)
    }
    assertNo(check({...good, [FILE]: GOOD_UNIT.replace('[Service]', 'Wants=dbus.socket\nAfter=dbus.socket\n\n[Service]')}), 'unit-affects-host')
  })
  test('unit-affects-host: pulling in a host unit that does something (a root shell, a reboot) when a client activates the service', () => {
    for (const dep of ['Wants=debug-shell.service', 'Requires=reboot.target', 'BindsTo=gdm.service']) {
      const f = assertFinding(check({...good, [FILE]: GOOD_UNIT.replace('[Service]', `${dep}\n\n[Service]`)}), 'unit-affects-host', 'error', FILE)
      assert.match(f.hint, /dbus\.socket/)
    }
  })
  test('unit-affects-host: a trigger that starts a host unit, even with boot-units', () => {
    const timer = `${UNITS}/org.example.App1.timer`
    assertFinding(withHost({...good, [timer]: '[Timer]\nOnBootSec=1\nUnit=debug-shell.service\n'}, {}, ['boot-units']), 'unit-affects-host', 'error', timer)
    assertNo(withHost({...good, [timer]: '[Timer]\nOnBootSec=1\nUnit=org.example.App1.service\n'}, {}, ['boot-units']), 'unit-affects-host')
  })
  test('unit-alias-host: Also= of a unit the extension does not ship', () => {
    assertFinding(withHost({...good, [FILE]: `${GOOD_UNIT}\n[Install]\nAlso=ssh.service\n`}, {}, ['boot-units']), 'unit-alias-host', 'error', FILE)
  })
  test('unit-host-reference: a host service file whose SystemdService= unit is missing', () => {
    const host = {'usr/share/dbus-1/system-services/org.freedesktop.timedate1.service': '[D-BUS Service]\nName=org.freedesktop.timedate1\nSystemdService=org.example.App1.service\n'}
    assert.match(assertFinding(withHost(good, host), 'unit-host-reference', 'error', FILE).message, /SystemdService=/)
  })
  test('unit-unreferenced: a service nothing in the extension starts on demand', () => {
    const extra = `${UNITS}/org.example.App1-extra.service`
    const files = {...good, [extra]: '[Service]\nExecStart=/usr/libexec/org.example.App1-helper\n'}
    assertFinding(check(files), 'unit-unreferenced', 'error', extra)
    assertNo(check({...files, [FILE]: GOOD_UNIT.replace('[Service]', 'Requires=org.example.App1-extra.service\n\n[Service]')}), 'unit-unreferenced')
    assertNo(withHost(files, {}, ['boot-units']), 'unit-unreferenced')
    assertNo(check(good), 'unit-unreferenced')
  })
})
