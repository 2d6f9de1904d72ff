import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {parseSysusers} from '../../src/formats/sysusers.js'
import {classify, ownNames} from '../../src/sysext/rules/confinement.js'
import {usersRules} from '../../src/sysext/rules/users.js'
import {loadHost} from '../../src/sysext/host.js'
import {scanTree} from '../../src/sysext/tree.js'
import {DEBIAN_12, type FileSpec, makeHostRoot, makeTree} from '../lib/fixtures.js'
import {assertFinding, assertNo, checkRuleSet} from '../lib/validate.js'

const HOST: Record<string, FileSpec> = {
  'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
  'etc/group': 'root:x:0:\naudio:x:29:\nmessagebus:x:101:\nnogroup:x:65534:\n',
}
const UNIT = 'usr/lib/systemd/system/org.example.App1.service'
const SVC = 'usr/share/dbus-1/system-services/org.example.App1.service'
const POLICY = 'usr/share/dbus-1/system.d/org.example.App1.conf'
const SYSUSERS = 'usr/lib/sysusers.d/org.example.App1.conf'
const check = (files: Record<string, FileSpec>) => checkRuleSet(usersRules, files, HOST, [], 'org.example.App1')
const unit = (body: string): string => `[Service]\nExecStart=/usr/libexec/x\n${body}`

describe('users and groups named by units, service files and bus policies', () => {
  test('user-missing: User= of a unit, of a service file, <policy user=>', () => {
    assert.match(assertFinding(check({[UNIT]: unit('User=rtkit\n')}), 'user-missing', 'error', UNIT).message, /names the user 'rtkit'.*217\/USER/)
    assertFinding(check({[SVC]: '[D-BUS Service]\nName=org.example.App1\nExec=/bin/false\nUser=rtkit\n'}), 'user-missing', 'error', SVC)
    assert.match(assertFinding(check({[POLICY]: '<busconfig><policy user="rtkit"><allow own="org.example.App1"/></policy></busconfig>'}), 'user-missing', 'error', POLICY).message, /Unknown username/)
  })
  test('group-missing: Group=, SupplementaryGroups=, <policy group=>', () => {
    assertFinding(check({[UNIT]: unit('Group=colord\n')}), 'group-missing', 'error', UNIT)
    assertFinding(check({[UNIT]: unit('SupplementaryGroups=audio geoclue\n')}), 'group-missing', 'error', UNIT)
    assertFinding(check({[POLICY]: '<busconfig><policy group="fwupd"><allow send_destination="org.example.App1"/></policy></busconfig>'}), 'group-missing', 'error', POLICY)
  })
  test('host accounts, root, numeric ids, DynamicUser=yes and accounts the tree creates pass', () => {
    assert.deepEqual(check({[UNIT]: unit('User=messagebus\nGroup=audio\nSupplementaryGroups=audio\n')}), [])
    assert.deepEqual(check({[UNIT]: unit('User=root\nGroup=4242\n')}), [])
    assert.deepEqual(check({[UNIT]: unit('DynamicUser=yes\nUser=rtkit\nGroup=rtkit\n')}), [])
    assert.deepEqual(check({[UNIT]: unit('User=rtkit\nGroup=rtkit\n'), [SYSUSERS]: 'u rtkit - "RealtimeKit"\n'}), [])
    assert.deepEqual(check({[UNIT]: unit('User=geo\nGroup=geog\n'), [SYSUSERS]: 'g geog -\nu geo -:geog\nm geo geog\n'}), [])
  })
})

describe('sysusers.d: new system accounts of the extension only', () => {
  test('sysusers-syntax', () => {
    assertFinding(check({[SYSUSERS]: 'u "broken -\n'}), 'sysusers-syntax', 'error', SYSUSERS)
    assertNo(check({[SYSUSERS]: '# comment\nu app1 - "x"\n'}), 'sysusers-syntax')
  })
  test('sysusers-line-refused: m into a host group, r ranges, other types', () => {
    assert.match(assertFinding(check({[SYSUSERS]: 'u app1 -\nm app1 audio\n'}), 'sysusers-line-refused', 'error', SYSUSERS).message, /existing group 'audio'/)
    assertFinding(check({[SYSUSERS]: 'm root app1\ng app1 -\n'}), 'sysusers-line-refused', 'error', SYSUSERS)
    assertFinding(check({[SYSUSERS]: 'r - 500-900\n'}), 'sysusers-line-refused', 'error', SYSUSERS)
    assertFinding(check({[SYSUSERS]: 'x app1 -\n'}), 'sysusers-line-refused', 'error', SYSUSERS)
  })
  test('sysusers-id: uid 0, non-system ids, ids in use, ids from a file, a host primary group', () => {
    for (const line of ['u app1 0', 'u app1 1000', 'u app1 100', 'g app1 101', 'u app1 /etc/shadow', 'u app1 -:audio', 'u app1 555:29'])
      assertFinding(check({[SYSUSERS]: `${line}\n`}), 'sysusers-id', 'error', SYSUSERS)
    assertNo(check({[SYSUSERS]: 'u app1 555 "x"\ng app1g 556\n'}), 'sysusers-id')
  })
  test('sysusers-host-name: names the host has (user, group, or a group named like the new user)', () => {
    assertFinding(check({[SYSUSERS]: 'u messagebus -\n'}), 'sysusers-host-name', 'error', SYSUSERS)
    assertFinding(check({[SYSUSERS]: 'g audio -\n'}), 'sysusers-host-name', 'error', SYSUSERS)
    assert.match(assertFinding(check({[SYSUSERS]: 'u nogroup -\n'}), 'sysusers-host-name', 'error', SYSUSERS).message, /primary group/)
    assertNo(check({[SYSUSERS]: 'u app1 -\n'}), 'sysusers-host-name')
    const root = check({[SYSUSERS]: 'u root 0\n'})
    assertFinding(root, 'sysusers-host-name', 'error', SYSUSERS)
    assertFinding(root, 'sysusers-id', 'error', SYSUSERS)
  })
  test('confinement gives usr/lib/sysusers.d/*.conf a role; other files there stay refused', () => {
    const tree = scanTree(makeTree({[SYSUSERS]: 'u app1 -\n', 'usr/lib/sysusers.d/README': 'x'}))
    const ctx = {tree, host: loadHost(makeHostRoot(DEBIAN_12)), name: 'org.example.App1', origin: 'path' as const}
    const own = ownNames(tree, ctx.name)
    assert.equal(classify(tree.entries.get(SYSUSERS)!, ctx, own).kind, 'role')
    assert.equal(classify(tree.entries.get('usr/lib/sysusers.d/README')!, ctx, own).kind, 'refused')
  })
  test('parseSysusers reads quoted fields', () => {
    assert.deepEqual(parseSysusers('u rtkit - "RealtimeKit daemon" /proc\n').lines, [{line: 1, type: 'u', name: 'rtkit', id: '-', gecos: 'RealtimeKit daemon', home: '/proc', shell: undefined}])
  })
})
