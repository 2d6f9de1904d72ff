import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import type {Finding} from '../../src/sysext/findings.js'
import {busNameProblem, dbusRules} from '../../src/sysext/rules/dbus.js'
import {parseXml} from '../../src/formats/xml.js'
import type {FileSpec} from '../lib/fixtures.js'
import {assertFinding, assertNo, checkRuleSet} from '../lib/validate.js'

const SERVICES = 'usr/share/dbus-1/system-services'
const POLICIES = 'usr/share/dbus-1/system.d'
const HELPER = {content: '#!/bin/sh\n', mode: 0o755}

/** A merged-/usr host with /usr/bin/false, as Exec=/bin/false needs. */
const hostFiles: Record<string, FileSpec> = {
  'usr/bin/false': {content: '', mode: 0o755},
  bin: {symlink: 'usr/bin'},
  'usr/lib/systemd/system/dbus-org.freedesktop.hostname1.service': '[Service]\nExecStart=/bin/false\n',
}

const check = (files: Record<string, FileSpec>): Finding[] => checkRuleSet(dbusRules, files, hostFiles)

const service = (body: string): string => `[D-BUS Service]\n${body}`
const GOOD_SERVICE = service('Name=org.example.App1\nExec=/usr/libexec/org.example.App1-helper\nUser=root\nSystemdService=org.example.App1.service\n')
const GOOD_POLICY = `<?xml version="1.0"?>
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.example.App1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.example.App1"/>
  </policy>
</busconfig>
`
const good: Record<string, FileSpec> = {
  [`${SERVICES}/org.example.App1.service`]: GOOD_SERVICE,
  [`${POLICIES}/org.example.App1.conf`]: GOOD_POLICY,
  'usr/libexec/org.example.App1-helper': HELPER,
  'usr/lib/systemd/system/org.example.App1.service': '[Service]\nType=dbus\nBusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\n',
}
const FILE = `${SERVICES}/org.example.App1.service`
const POLICY = `${POLICIES}/org.example.App1.conf`

describe('dbus rules: a correct service, unit and policy', () => {
  test('produce no finding', () => {
    assert.deepEqual(check(good), [])
  })
  test('a service using the host\'s /bin/false produces no finding; one started by a host unit is refused (dbus-service-unit-host)', () => {
    const viaHost = check({...good, [FILE]: service('Name=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=dbus-org.freedesktop.hostname1.service\n')})
    assert.deepEqual(viaHost.map((f) => f.rule), ['dbus-service-unit-host'])
    assert.match(viaHost[0].message, /would start the host's dbus-org\.freedesktop\.hostname1\.service/)
  })
})

describe('busNameProblem follows the D-Bus specification', () => {
  test('accepts well-known names with - and _', () => {
    assert.equal(busNameProblem('org.example.App_1'), undefined)
    assert.equal(busNameProblem('org.example-site.App'), undefined)
  })
  test('rejects unique names, single elements, digits first, empty elements, long names', () => {
    assert.match(busNameProblem(':1.42') ?? '', /unique connection name/)
    assert.match(busNameProblem('org') ?? '', /single element/)
    assert.match(busNameProblem('org.example.1App') ?? '', /invalid element '1App'/)
    assert.match(busNameProblem('.org.example') ?? '', /starts with '\.'/)
    assert.match(busNameProblem('org..example') ?? '', /empty element/)
    assert.match(busNameProblem(`org.${'a'.repeat(252)}`) ?? '', /longer than 255/)
  })
})

describe('dbus service file rules', () => {
  test('dbus-service-unreadable: a file the scan could not read', () => {
    const findings = check({...good, [FILE]: `${service('')}${'#'.repeat(1024 * 1024 + 1)}\n`})
    assert.match(assertFinding(findings, 'dbus-service-unreadable', 'error', FILE).message, /EFBIG/)
  })

  test('dbus-service-syntax: a line that is not Key=value, with its line number', () => {
    const findings = check({...good, [FILE]: `${GOOD_SERVICE}this is not a pair\n`})
    assert.match(assertFinding(findings, 'dbus-service-syntax', 'error', FILE).message, /^Line 6: 'this is not a pair' is not a key=value line/)
    assertNo(check(good), 'dbus-service-syntax')
  })

  test('dbus-service-group-missing: no [D-BUS Service] group', () => {
    assertFinding(check({...good, [FILE]: '[Service]\nName=org.example.App1\n'}), 'dbus-service-group-missing', 'error', FILE)
    assertNo(check(good), 'dbus-service-group-missing')
  })

  test('dbus-service-name-missing', () => {
    const findings = check({...good, [FILE]: service('Exec=/bin/false\nUser=root\nSystemdService=org.example.App1.service\n')})
    assert.match(assertFinding(findings, 'dbus-service-name-missing', 'error', FILE).hint, /Name=org\.example\.App1/)
    assertNo(check(good), 'dbus-service-name-missing')
  })

  test('dbus-service-name-invalid: an element starting with a digit', () => {
    const file = `${SERVICES}/org.example.1App.service`
    const findings = check({[file]: service('Name=org.example.1App\nExec=/bin/false\nUser=root\nSystemdService=dbus-org.freedesktop.hostname1.service\n')})
    assert.match(assertFinding(findings, 'dbus-service-name-invalid', 'error', file).message, /^Name=org\.example\.1App has an invalid element '1App'/)
    assertNo(findings, 'dbus-service-name-mismatch')
    assertNo(check(good), 'dbus-service-name-invalid')
  })

  test('dbus-service-name-mismatch: Name= differs from the file name', () => {
    const file = `${SERVICES}/org.example.Bar.service`
    const findings = check({...good, [file]: service('Name=org.example.Foo\nExec=/bin/false\nUser=root\nSystemdService=org.example.App1.service\n')})
    assert.equal(assertFinding(findings, 'dbus-service-name-mismatch', 'error', file).message,
      "Name=org.example.Foo does not match the file name 'org.example.Bar.service'; dbus will not activate it.")
    assertNo(check(good), 'dbus-service-name-mismatch')
  })

  test('dbus-service-user-missing: an error only where the bus refuses it (dbus-daemon without SystemdService=)', () => {
    const daemon = {...hostFiles, 'usr/bin/dbus-daemon': {content: '', mode: 0o755}}
    const broker = {...daemon, 'usr/bin/dbus-broker': {content: '', mode: 0o755}, 'etc/systemd/system/dbus.service': {symlink: '/usr/lib/systemd/system/dbus-broker.service'}}
    const viaUnit = {...good, [FILE]: service('Name=org.example.App1\nExec=/bin/false\nSystemdService=org.example.App1.service\n')}
    const direct = {...good, [FILE]: service('Name=org.example.App1\nExec=/usr/libexec/org.example.App1-helper\n')}
    assert.match(assertFinding(checkRuleSet(dbusRules, viaUnit, daemon), 'dbus-service-user-missing', 'warning', FILE).message, /goes through SystemdService=/)
    assert.match(assertFinding(checkRuleSet(dbusRules, direct, daemon), 'dbus-service-user-missing', 'error', FILE).message, /dbus-daemon refuses the activation/)
    assert.match(assertFinding(checkRuleSet(dbusRules, direct, broker), 'dbus-service-user-missing', 'warning', FILE).message, /dbus-broker activates it anyway/)
    assertFinding(checkRuleSet(dbusRules, viaUnit, broker), 'dbus-service-user-missing', 'warning', FILE)
    assertNo(check(good), 'dbus-service-user-missing')
  })

  test('dbus-service-root-without-unit: User=root and dbus starts the binary itself', () => {
    const findings = check({...good, [FILE]: service('Name=org.example.App1\nExec=/usr/libexec/org.example.App1-helper\nUser=root\n')})
    assertFinding(findings, 'dbus-service-root-without-unit', 'warning', FILE)
    assertNo(check({...good, [FILE]: service('Name=org.example.App1\nExec=/usr/libexec/org.example.App1-helper\nUser=nobody\n')}), 'dbus-service-root-without-unit')
    assertNo(check(good), 'dbus-service-root-without-unit')
  })

  test('dbus-service-exec-missing', () => {
    assertFinding(check({...good, [FILE]: service('Name=org.example.App1\nUser=root\nSystemdService=org.example.App1.service\n')}),
      'dbus-service-exec-missing', 'error', FILE)
    assertNo(check(good), 'dbus-service-exec-missing')
  })

  test('dbus-service-exec-invalid: a bare name (the system bus does not search PATH)', () => {
    const findings = check({...good, [FILE]: service('Name=org.example.App1\nExec=helper --system\nUser=root\nSystemdService=org.example.App1.service\n')})
    assert.match(assertFinding(findings, 'dbus-service-exec-invalid', 'error', FILE).message, /^Exec=helper --system does not start with an absolute path/)
    assertNo(check(good), 'dbus-service-exec-invalid')
  })

  test('dbus-service-exec-not-found: an error when dbus itself runs Exec=', () => {
    const findings = check({...good, [FILE]: service('Name=org.example.App1\nExec=/usr/libexec/missing\nUser=nobody\n')})
    assert.match(assertFinding(findings, 'dbus-service-exec-not-found', 'error', FILE).message,
      /^Exec=\/usr\/libexec\/missing: \/usr\/libexec\/missing does not exist in the tree or on the host; activation fails\.$/)
  })

  test('dbus-service-exec-not-found: a non-executable binary', () => {
    const findings = check({...good, 'usr/libexec/org.example.App1-helper': {content: '#!/bin/sh\n', mode: 0o644},
      [FILE]: service('Name=org.example.App1\nExec="/usr/libexec/org.example.App1-helper" --system\nUser=nobody\n')})
    assert.match(assertFinding(findings, 'dbus-service-exec-not-found', 'error', FILE).message, /is not executable \(.*mode 0644\)/)
  })

  test('dbus-service-exec-not-found: only a warning when SystemdService= starts the service', () => {
    const findings = check({...good, [FILE]: service('Name=org.example.App1\nExec=/usr/libexec/missing\nUser=root\nSystemdService=org.example.App1.service\n')})
    assertFinding(findings, 'dbus-service-exec-not-found', 'warning', FILE)
    assertNo(check(good), 'dbus-service-exec-not-found')
  })

  test('dbus-service-unit-missing: SystemdService= names no unit in the tree or on the host', () => {
    const findings = check({...good, [FILE]: service('Name=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=org.example.Gone.service\n')})
    assertFinding(findings, 'dbus-service-unit-missing', 'error', FILE)
    assertNo(check(good), 'dbus-service-unit-missing')
  })

  test('SystemdService= naming an instance of a template unit finds the template', () => {
    const findings = check({...good, 'usr/lib/systemd/system/app1@.service': '[Service]\nExecStart=/usr/libexec/org.example.App1-helper %i\n',
      [FILE]: service('Name=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=app1@system.service\n')})
    assertNo(findings, 'dbus-service-unit-missing')
  })

  test('dbus-service-unit-alias: the unit is only an Alias= that exists after enabling', () => {
    const findings = check({...good,
      'usr/lib/systemd/system/org.example.App1.service': '[Service]\nType=dbus\nBusName=org.example.App1\nExecStart=/usr/libexec/org.example.App1-helper\n[Install]\nAlias=dbus-org.example.App1.service\n',
      [FILE]: service('Name=org.example.App1\nExec=/bin/false\nUser=root\nSystemdService=dbus-org.example.App1.service\n')})
    assert.match(assertFinding(findings, 'dbus-service-unit-alias', 'warning', FILE).hint, /SystemdService=org\.example\.App1\.service/)
    assertNo(findings, 'dbus-service-unit-missing')
    assertNo(check(good), 'dbus-service-unit-alias')
  })
})

describe('parseXml', () => {
  test('gives elements with attributes, text and start lines', () => {
    const doc = parseXml('<?xml version="1.0"?>\n<!-- c -->\n<a x="1">\n  <b>t &amp; u</b>\n</a>\n')
    assert.ok('root' in doc)
    assert.deepEqual(doc.root.children[0], {name: 'b', attrs: {}, children: [], text: 't & u', line: 4})
    assert.deepEqual([doc.root.name, doc.root.attrs, doc.root.line], ['a', {x: '1'}, 3])
  })
  test('reports the line of a malformed document and refuses two roots', () => {
    assert.deepEqual(parseXml('<a>\n<b>\n</a>\n'), {line: 3, message: "Expected closing tag 'b' (opened in line 2, col 1) instead of closing tag 'a'."})
    const two = parseXml('<a/>\n<b/>\n')
    assert.ok(!('root' in two))
    assert.deepEqual(two, {line: 2, message: 'more than one root element (<a>, <b>)'})
  })
})

const policy = (body: string): string => `<busconfig>\n${body}\n</busconfig>\n`

describe('bus policy rules', () => {
  test('bus-policy-unreadable', () => {
    assertFinding(check({...good, [POLICY]: `<busconfig/>${' '.repeat(1024 * 1024 + 1)}`}), 'bus-policy-unreadable', 'error', POLICY)
    assertNo(check(good), 'bus-policy-unreadable')
  })

  test('bus-policy-xml: malformed XML, with the line', () => {
    const findings = check({...good, [POLICY]: '<busconfig>\n  <policy user="root">\n    <allow own="org.example.App1">\n  </policy>\n</busconfig>\n'})
    assert.match(assertFinding(findings, 'bus-policy-xml', 'error', POLICY).message, /^Line 4: /)
    assertNo(check(good), 'bus-policy-xml')
  })

  test('bus-policy-root: the root element is not <busconfig>', () => {
    assertFinding(check({...good, [POLICY]: '<policy user="root"><allow own="org.example.App1"/></policy>\n'}), 'bus-policy-root', 'error', POLICY)
    assertNo(check(good), 'bus-policy-root')
  })

  test('bus-policy-unbound: owning names the extension does not declare', () => {
    for (const allow of ['<allow own="*"/>', '<allow own_prefix=""/>', '<allow own_prefix="org"/>', '<allow own_prefix="org.freedesktop"/>', '<allow own="org.freedesktop.timedate1"/>', '<allow own_prefix="org.example"/>']) {
      const findings = check({...good, [POLICY]: policy(`<policy user="root"><allow own="org.example.App1"/></policy>\n<policy user="app1">${allow}</policy>`)})
      assert.match(assertFinding(findings, 'bus-policy-unbound', 'error', POLICY).message, /^Line 3: .*which no service file of the extension declares/)
    }
    assertNo(check({...good, [POLICY]: policy('<policy user="root"><allow own_prefix="org.example.App1"/></policy>')}), 'bus-policy-unbound')
    assertNo(check(good), 'bus-policy-unbound')
  })

  test('bus-policy-unbound: send and receive rules must name the extension as destination or sender, for every policy', () => {
    const opened = [
      ['context="default"', '<allow send_destination="*"/>', /messages to '\*'/],
      ['user="*"', '<allow send_destination="*"/>', /messages to '\*'/],
      ['user="root"', '<allow send_destination="*"/>', /messages to '\*'/],
      ['context="default"', '<allow send_type="method_call"/>', /no send_destination=, so it applies to messages to every service/],
      ['user="alice"', '<allow send_interface="org.freedesktop.systemd1.Manager"/>', /no send_destination=/],
      ['group="users"', '<allow send_destination_prefix="org"/>', /messages to 'org'/],
      ['context="default"', '<allow receive_type="method_call"/>', /no receive_sender=/],
      ['context="default"', '<allow receive_sender="org.freedesktop.login1"/>', /messages from 'org\.freedesktop\.login1'/],
      ['context="default"', '<deny send_destination="org.freedesktop.login1"/>', /messages to 'org\.freedesktop\.login1'/],
      ['context="default"', '<allow user="*"/>', /a connection rule/],
      ['context="default"', '<allow/>', /names no destination, sender or name/],
    ] as const
    for (const [who, rule, why] of opened) {
      const findings = check({...good, [POLICY]: policy(`<policy user="root"><allow own="org.example.App1"/></policy>\n<policy ${who}>${rule}</policy>`)})
      const f = assertFinding(findings, 'bus-policy-unbound', 'error', POLICY)
      assert.ok(f.message.includes(`in <policy ${who}> reaches beyond the extension`), f.message)
      assert.match(f.message, why)
    }
    const bound = '<policy context="default"><allow send_destination="org.example.App1" send_interface="org.example.App1"/><allow receive_sender="org.example.App1"/><deny send_destination="org.example.App1" send_member="Secret"/><allow send_destination_prefix="org.example.App1.Sub"/></policy>'
    assertNo(check({...good, [POLICY]: policy(`<policy user="root"><allow own="org.example.App1"/></policy>${bound}`)}), 'bus-policy-unbound')
  })

  test('bus-policy-mandatory: a mandatory context overrides the host', () => {
    const findings = check({...good, [POLICY]: policy('<policy user="root"><allow own="org.example.App1"/></policy><policy context="mandatory"><allow send_destination="org.example.App1"/></policy>')})
    assertFinding(findings, 'bus-policy-mandatory', 'error', POLICY)
    assertNo(check(good), 'bus-policy-mandatory')
  })

  test('bus-policy-element: anything but policies of allow/deny rules', () => {
    for (const element of ['<includedir>/tmp/evil</includedir>', '<limit name="max_incoming_bytes">1</limit>', '<servicedir>/tmp</servicedir>', '<policy context="default"><associate own="x"/></policy>']) {
      const findings = check({...good, [POLICY]: policy(`<policy user="root"><allow own="org.example.App1"/></policy>${element}`)})
      assertFinding(findings, 'bus-policy-element', 'error', POLICY)
    }
    assertNo(check(good), 'bus-policy-element')
  })

  test('dbus-service-name-host: a name the host has a service file or a policy for', () => {
    const hostWith = (files: Record<string, FileSpec>) => checkRuleSet(dbusRules, good, {...hostFiles, ...files})
    const f = assertFinding(hostWith({'usr/share/dbus-1/system.d/timedate.conf': policy('<policy user="root"><allow own="org.example.App1"/></policy>')}), 'dbus-service-name-host', 'error', FILE)
    assert.match(f.message, /already a name of the host \(\/usr\/share\/dbus-1\/system\.d\/timedate\.conf\)/)
    assertFinding(hostWith({'usr/local/share/dbus-1/system-services/org.example.App1.service': 'x'}), 'dbus-service-name-host', 'error', FILE)
    assertNo(check(good), 'dbus-service-name-host')
  })

  test('bus-policy-eavesdrop: any eavesdrop="true" allow', () => {
    const findings = check({...good, [POLICY]: policy('<policy user="root"><allow own="org.example.App1"/><allow eavesdrop="true"/></policy>')})
    assertFinding(findings, 'bus-policy-eavesdrop', 'error', POLICY)
    assertNo(check(good), 'bus-policy-eavesdrop')
  })

  test('bus-policy-name-not-owned: no policy owns a service\'s name', () => {
    const mentioned = check({...good, [POLICY]: policy('<policy context="default"><allow send_destination="org.example.App1"/></policy>')})
    assert.match(assertFinding(mentioned, 'bus-policy-name-not-owned', 'warning', FILE).message, /mention org\.example\.App1 but none allows owning it/)
    const absent = check({...good, [POLICY]: policy('<policy user="root"><allow own="org.example.Other"/></policy>')})
    assert.match(assertFinding(absent, 'bus-policy-name-not-owned', 'warning', FILE).message, /^No bus policy in .* mentions org\.example\.App1/)
    assertNo(check({...good, [POLICY]: policy('<policy user="root"><allow own_prefix="org.example"/></policy>')}), 'bus-policy-name-not-owned')
    assertNo(check(good), 'bus-policy-name-not-owned')
  })
})
