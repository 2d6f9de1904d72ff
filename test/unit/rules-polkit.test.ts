import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import type {Finding} from '../../src/sysext/findings.js'
import {actionIdProblem, polkitRules} from '../../src/sysext/rules/polkit.js'
import type {FileSpec} from '../lib/fixtures.js'
import {assertFinding, assertNo, checkRuleSet} from '../lib/validate.js'

const ACTIONS = 'usr/share/polkit-1/actions'
const FILE = `${ACTIONS}/org.example.App1.policy`

const check = (files: Record<string, FileSpec>): Finding[] => checkRuleSet(polkitRules, files)

const action = (id: string, any = 'no', inactive = 'no', active = 'auth_admin_keep'): string => `  <action id="${id}">
    <description>Configure the example</description>
    <message>Authentication is required to configure the example</message>
    <defaults>
      <allow_any>${any}</allow_any>
      <allow_inactive>${inactive}</allow_inactive>
      <allow_active>${active}</allow_active>
    </defaults>
  </action>`
const policyconfig = (...actions: string[]): string => `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC
 "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <vendor>Example</vendor>
${actions.join('\n')}
</policyconfig>
`
const good = {[FILE]: policyconfig(action('org.example.App1.configure'), action('org.example.App1.read', 'auth_admin', 'yes', 'yes'))}

describe('polkit rules: a correct action file', () => {
  test('produces no finding', () => {
    assert.deepEqual(check(good), [])
  })
})

describe('actionIdProblem', () => {
  test('accepts reverse-DNS ids with - and digits', () => {
    assert.equal(actionIdProblem('org.example.App1.do-thing2'), undefined)
  })
  test('rejects ids without a dot, with other characters, or a leading/trailing dot', () => {
    assert.match(actionIdProblem('configure') ?? '', /no '\.'/)
    assert.match(actionIdProblem('org.example.do thing') ?? '', /characters other than/)
    assert.equal(actionIdProblem('io.github.sysext_helper.monitor'), undefined)
    assert.match(actionIdProblem('org.example.') ?? '', /starts or ends with '\.'/)
    assert.match(actionIdProblem('.org.example') ?? '', /starts or ends with '\.'/)
    assert.match(actionIdProblem('') ?? '', /empty/)
  })
})

describe('polkit action file rules', () => {
  test('polkit-policy-unreadable', () => {
    assertFinding(check({[FILE]: `<policyconfig/>${' '.repeat(1024 * 1024 + 1)}`}), 'polkit-policy-unreadable', 'error', FILE)
    assertNo(check(good), 'polkit-policy-unreadable')
  })

  test('polkit-policy-xml: malformed XML with its line', () => {
    const findings = check({[FILE]: '<policyconfig>\n  <action id="org.example.App1.x">\n</policyconfig>\n'})
    assert.match(assertFinding(findings, 'polkit-policy-xml', 'error', FILE).message, /^Line 3: /)
    assertNo(check(good), 'polkit-policy-xml')
  })

  test('polkit-policy-root: the root element is not <policyconfig>', () => {
    assertFinding(check({[FILE]: `<policy>${action('org.example.App1.configure')}</policy>\n`}), 'polkit-policy-root', 'error', FILE)
    assertNo(check(good), 'polkit-policy-root')
  })

  test('polkit-action-id-invalid: missing and invalid ids', () => {
    const findings = check({[FILE]: policyconfig(action('configure'), '  <action><description>x</description></action>')})
    const invalid = findings.filter((f) => f.rule === 'polkit-action-id-invalid')
    assert.deepEqual(invalid.map((f) => [f.severity, f.file]), [['error', FILE], ['error', FILE]])
    assert.match(invalid[0].message, /^Line 7: <action id="configure">: the id has no '\.'/)
    assert.match(invalid[1].message, /^Line 16: <action id="">: the id is missing\.$/)
    assertNo(check(good), 'polkit-action-id-invalid')
  })

  test('polkit-action-duplicate: the same id in two files of the tree', () => {
    const other = `${ACTIONS}/org.example.App1.extra.policy`
    const findings = check({...good, [other]: policyconfig(action('org.example.App1.configure'))})
    // Files are read in name order, so the second file is the duplicate.
    assert.match(assertFinding(findings, 'polkit-action-duplicate', 'error', FILE).message,
      new RegExp(`action org\\.example\\.App1\\.configure is already defined at ${other}:7`))
    assertNo(check(good), 'polkit-action-duplicate')
  })

  test('polkit-defaults-invalid: a value that is not an authorization', () => {
    const findings = check({[FILE]: policyconfig(action('org.example.App1.configure', 'no', 'no', 'auth_admin_kept'))})
    assert.match(assertFinding(findings, 'polkit-defaults-invalid', 'error', FILE).message,
      /^Line 13: <allow_active>auth_admin_kept<\/allow_active> in action org\.example\.App1\.configure is not one of/)
    assertNo(check(good), 'polkit-defaults-invalid')
  })

  test('polkit-allow-any-yes: any client gets the action without authentication', () => {
    const findings = check({[FILE]: policyconfig(action('org.example.App1.configure', 'yes'))})
    assertFinding(findings, 'polkit-allow-any-yes', 'warning', FILE)
    // allow_inactive/allow_active=yes stay limited to local sessions and are not flagged.
    assertNo(check(good), 'polkit-allow-any-yes')
  })

  test('polkit-action-host: redefining an action the host defines', () => {
    const host = {'usr/share/polkit-1/actions/org.freedesktop.systemd1.policy': policyconfig(action('org.freedesktop.systemd1.manage-units'))}
    const findings = checkRuleSet(polkitRules, {[FILE]: policyconfig(action('org.freedesktop.systemd1.manage-units', 'yes', 'yes', 'yes'))}, host)
    const f = assertFinding(findings, 'polkit-action-host', 'error', FILE)
    assert.match(f.message, /already defined by the host \(\/usr\/share\/polkit-1\/actions\/org\.freedesktop\.systemd1\.policy\)/)
    assertNo(checkRuleSet(polkitRules, good, host), 'polkit-action-host')
  })

  test('polkit-imply-outside: implying an action the extension does not define', () => {
    const implying = (implied: string) => action('org.example.App1.configure').replace('</defaults>', `</defaults>\n    <annotate key="org.freedesktop.policykit.imply">${implied}</annotate>`)
    const f = assertFinding(check({[FILE]: policyconfig(implying('org.example.App1.other org.freedesktop.login1.reboot'), action('org.example.App1.other'))}), 'polkit-imply-outside', 'error', FILE)
    assert.match(f.message, /implies org\.freedesktop\.login1\.reboot,/)
    assertNo(check({[FILE]: policyconfig(implying('org.example.App1.other'), action('org.example.App1.other'))}), 'polkit-imply-outside')
  })

  test('polkit-exec-path-outside: pkexec of a program the extension does not ship', () => {
    const withPath = (path: string) => policyconfig(action('org.example.App1.run', 'yes', 'yes', 'yes').replace('</defaults>', `</defaults>\n    <annotate key="org.freedesktop.policykit.exec.path">${path}</annotate>`))
    const host = {'usr/bin/bash': {content: '', mode: 0o755}}
    assertFinding(checkRuleSet(polkitRules, {[FILE]: withPath('/usr/bin/bash')}, host), 'polkit-exec-path-outside', 'error', FILE)
    assertNo(checkRuleSet(polkitRules, {[FILE]: withPath('/usr/libexec/org.example.App1/tool'), 'usr/libexec/org.example.App1/tool': {content: '', mode: 0o755}}, host), 'polkit-exec-path-outside')
  })
})
