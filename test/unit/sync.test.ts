import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import type {AppDeploy} from '../../src/flatpak/installations.js'
import {policyApproves, readPolicy} from '../../src/flatpak/policy.js'
import {emptyState, type ManagedExtension, type State} from '../../src/lifecycle/state.js'
import {planSync} from '../../src/lifecycle/sync.js'
import {makeTree} from '../lib/fixtures.js'

const installation = {id: 'default', path: '/var/lib/flatpak'}
function app(appId: string, commit: string, origin = 'flathub'): AppDeploy {
  const files = `/var/lib/flatpak/app/${appId}/current/active/files`
  return {appId, installation, files, deployDir: `/var/lib/flatpak/app/${appId}/x86_64/stable/${commit}`, commit, extensions: `${files}/lib/extensions`, origin}
}
function managed(appId: string, commit: string): ManagedExtension {
  return {
    name: appId, source: {kind: 'flatpak', path: '', appId, installation: installation.path, commit}, target: 'local', link: `/var/lib/extensions/${appId}`,
    linkTarget: `/var/lib/sysext-helper/stage/${appId}-x`, stage: `/var/lib/sysext-helper/stage/${appId}-x`, releaseGenerated: true, hash: 'h',
    installedAt: '', busNames: [], units: [], polkitActions: [], touchesPolkit: false, reloadManager: false,
  }
}
const noPolicy = {file: '/etc/sysext-helper/policy.conf', apps: [], remotes: []}
const ships = () => true

function stateWith(approved: string[], extensions: ManagedExtension[] = []): State {
  const state = emptyState()
  for (const a of approved) state.approvals[a] = {appId: a, approvedAt: ''}
  for (const e of extensions) state.extensions[e.name] = e
  return state
}

describe('planSync', () => {
  test('nothing is automatic: an unapproved app shipping an extension is only reported', () => {
    const plan = planSync([app('org.example.A', 'c1')], ships, emptyState(), noPolicy)
    assert.deepEqual(plan.install, [])
    assert.deepEqual(plan.unapproved.map((a) => a.appId), ['org.example.A'])
  })
  test('apps without lib/extensions are ignored', () => {
    const plan = planSync([app('org.example.A', 'c1')], () => false, stateWith(['org.example.A']), noPolicy)
    assert.deepEqual(plan, {install: [], remove: [], unapproved: [], unchanged: []})
  })
  test('an approved app is installed; an unchanged deploy is left alone', () => {
    assert.deepEqual(planSync([app('org.example.A', 'c1')], ships, stateWith(['org.example.A']), noPolicy).install.map((i) => [i.app.appId, i.reason]), [['org.example.A', 'new']])
    const same = planSync([app('org.example.A', 'c1')], ships, stateWith(['org.example.A'], [managed('org.example.A', 'c1')]), noPolicy)
    assert.deepEqual(same.install, [])
    assert.deepEqual(same.unchanged, ['org.example.A'])
  })
  test('a new deploy (flatpak update) is re-installed', () => {
    const plan = planSync([app('org.example.A', 'c2')], ships, stateWith(['org.example.A'], [managed('org.example.A', 'c1')]), noPolicy)
    assert.deepEqual(plan.install.map((i) => [i.app.appId, i.reason]), [['org.example.A', 'deploy changed']])
  })
  test('an uninstalled or extension-less app is removed', () => {
    const gone = planSync([], ships, stateWith(['org.example.A'], [managed('org.example.A', 'c1')]), noPolicy)
    assert.deepEqual(gone.remove.map((r) => r.name), ['org.example.A'])
    const noExt = planSync([app('org.example.A', 'c2')], () => false, stateWith(['org.example.A'], [managed('org.example.A', 'c1')]), noPolicy)
    assert.match(noExt.remove[0].reason, /no longer ships/)
  })
  test('the admin policy approves by app id or by remote', () => {
    const policy = readPolicy(`${makeTree({'policy.conf': '[Approval]\nApps=org.example.A;\nRemotes=internal;\n'})}/policy.conf`)
    assert.deepEqual(policy.apps, ['org.example.A'])
    assert.ok(policyApproves(policy, app('org.example.A', 'c', 'flathub')))
    assert.ok(policyApproves(policy, app('org.example.B', 'c', 'internal')))
    assert.equal(policyApproves(policy, app('org.example.C', 'c', 'flathub')), undefined)
    const plan = planSync([app('org.example.B', 'c', 'internal'), app('org.example.C', 'c')], ships, emptyState(), policy)
    assert.deepEqual(plan.install.map((i) => i.app.appId), ['org.example.B'])
    assert.deepEqual(plan.unapproved.map((a) => a.appId), ['org.example.C'])
  })
  test('a missing policy file approves nothing; a broken one is an error naming the line', () => {
    assert.deepEqual(readPolicy('/nonexistent/policy.conf').apps, [])
    assert.throws(() => readPolicy(`${makeTree({'p.conf': '[Approval]\nnot a key\n'})}/p.conf`), /p\.conf:2/)
  })
})
