import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {dialogDetails} from '../../src/helper/manager.js'
import {DEFAULT_POLICY, parsePolicy} from '../../src/helper/policy.js'

describe("the admin's policy for app requests", () => {
  it('reads Mode and the no-password lists', () => {
    const {policy, problem} = parsePolicy('# comment\n[Requests]\nMode=disabled\nNoPasswordApps=org.gnome.Sysprof;org.example.App;\nNoPasswordRemotes=flathub;\n')
    assert.equal(problem, undefined)
    assert.deepEqual(policy, {mode: 'disabled', noPasswordApps: ['org.gnome.Sysprof', 'org.example.App'], noPasswordRemotes: ['flathub']})
    assert.deepEqual(parsePolicy('').policy, DEFAULT_POLICY)
  })

  it('a broken file is the safe default, with the file, line and why', () => {
    for (const [text, re] of [
      ['[Requests]\nMode=yes\n', /policy\.conf:2: Mode must be 'allow' or 'disabled', not 'yes'/],
      ['[Requests]\nNoPassword=all\n', /policy\.conf:2: unknown key 'NoPassword'/],
      ['[Other]\nMode=allow\n', /policy\.conf:1: unknown group \[Other\]/],
      ['Mode=allow\n', /policy\.conf:1: /],
    ] as const) {
      const {policy, problem} = parsePolicy(text, '/etc/sysext-helper/policy.conf')
      assert.deepEqual(policy, DEFAULT_POLICY, text)
      assert.match(problem ?? '', re)
      assert.match(problem ?? '', /safe default \(app requests allowed, each one with the admin's password\)/)
    }
  })

  it("puts what goes into /usr into the dialog's details", () => {
    const d = dialogDetails('org.example.App', {name: 'org.example.App', target: 'local', declarations: {busNames: [{name: 'org.example.App.Helper1'}], units: ['app-helper.service'], polkitActions: []}}, [])
    assert.deepEqual(d, {app_id: 'org.example.App', extension: 'org.example.App', bus_names: 'org.example.App.Helper1', units: 'app-helper.service', polkit_actions: 'none', extras: 'none', target: 'local'})
  })
})
