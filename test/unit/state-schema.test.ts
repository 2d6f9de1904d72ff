/**
 * state.json is checked on every read: wrong types are refused with STATE_INVALID
 * naming the field (never read as empty, never INTERNAL), and every path a later
 * run would delete, replace or link is confined to what sysext-helper owns.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, describe, test} from 'node:test'
import {HelperError} from '../../src/errors.js'
import {checkState, isManagedLink, isStageDir, validExtensionName} from '../../src/lifecycle/state-schema.js'
import {DEFAULT_PATHS, type Paths, cleanLeftovers, readState, writeState} from '../../src/lifecycle/state.js'

const scratch = mkdtempSync(join(tmpdir(), 'sysext-state-schema-'))
after(() => rmSync(scratch, {recursive: true, force: true}))
const paths: Paths = DEFAULT_PATHS
const NAME = 'org.example.App'
const STAGE = `/var/lib/sysext-helper/stage/${NAME}-0123456789abcdef`

function record(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: NAME, source: {kind: 'path', path: '/srv/ext'}, target: 'local', link: `/var/lib/extensions/${NAME}`,
    linkTarget: STAGE, stage: STAGE, releaseGenerated: true, hash: 'abc', installedAt: '2026-01-01T00:00:00Z',
    busNames: [{name: 'org.example.Helper', unit: 'example.service'}], units: ['example.service'], polkitActions: ['org.example.act'],
    touchesPolkit: true, reloadManager: false, ...over,
  }
}

function pending(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {name: NAME, op: 'install', restore: [{link: `/var/lib/extensions/${NAME}`, target: null}], newStage: `${STAGE}-x`, startedAt: 'now', pid: 1, ...over}
}

/** Asserts STATE_INVALID naming `field`. */
function refused(raw: unknown, field: string): void {
  assert.throws(() => checkState(raw, paths, '/var/lib/sysext-helper/state.json'), (e: unknown) => {
    assert.ok(e instanceof HelperError, String(e))
    assert.equal(e.code, 'STATE_INVALID')
    assert.equal(e.data?.field, field)
    assert.equal(e.file, '/var/lib/sysext-helper/state.json')
    assert.match(e.message, /state\.json/)
    assert.match(e.hint ?? '', /mv \/var\/lib\/sysext-helper\/state\.json/)
    return true
  })
}

describe('state schema: types', () => {
  test('a complete, consistent state passes', () => {
    const s = checkState<{extensions: Record<string, unknown>}>({version: 1, extensions: {[NAME]: record()}, pending: {[NAME]: pending()}, approvals: {a: {appId: 'a', approvedAt: 'x'}}}, paths, 'f')
    assert.ok(s.extensions[NAME])
  })
  test('missing top-level maps default to empty (an old or fresh file)', () => {
    assert.deepEqual(checkState({}, paths, 'f'), {version: 1, extensions: {}, pending: {}, approvals: {}})
  })
  test('null, a list, a number at the top are refused, not read as empty', () => {
    refused(null, 'the top level')
    refused([], 'the top level')
    refused(3, 'the top level')
  })
  test('extensions/pending/approvals of the wrong type', () => {
    refused({extensions: null}, 'extensions')
    refused({extensions: []}, 'extensions')
    refused({pending: 'x'}, 'pending')
    refused({approvals: 1}, 'approvals')
    refused({version: 2}, 'version')
  })
  test('each field of a record', () => {
    const f = `extensions["${NAME}"]`
    refused({extensions: {[NAME]: null}}, f)
    refused({extensions: {[NAME]: record({name: 'other'})}}, `${f}.name`)
    refused({extensions: {[NAME]: record({target: 'tmp'})}}, `${f}.target`)
    refused({extensions: {[NAME]: record({source: null})}}, `${f}.source`)
    refused({extensions: {[NAME]: record({source: {kind: 'x', path: '/a'}})}}, `${f}.source.kind`)
    refused({extensions: {[NAME]: record({source: {kind: 'path', path: 'rel'}})}}, `${f}.source.path`)
    refused({extensions: {[NAME]: record({source: {kind: 'path', path: '/a', appId: 3}})}}, `${f}.source.appId`)
    refused({extensions: {[NAME]: record({hash: null})}}, `${f}.hash`)
    refused({extensions: {[NAME]: record({installedAt: 1})}}, `${f}.installedAt`)
    refused({extensions: {[NAME]: record({touchesPolkit: 'yes'})}}, `${f}.touchesPolkit`)
    refused({extensions: {[NAME]: record({releaseGenerated: null})}}, `${f}.releaseGenerated`)
    refused({extensions: {[NAME]: record({reloadManager: 0})}}, `${f}.reloadManager`)
    refused({extensions: {[NAME]: record({busNames: {}})}}, `${f}.busNames`)
    refused({extensions: {[NAME]: record({busNames: [{name: 1}]})}}, `${f}.busNames[0].name`)
    refused({extensions: {[NAME]: record({units: [1]})}}, `${f}.units[0]`)
    refused({extensions: {[NAME]: record({polkitActions: null})}}, `${f}.polkitActions`)
    refused({extensions: {[NAME]: record({manifest: {hash: 'h', entries: [['a']]}})}}, `${f}.manifest.entries[0]`)
    refused({extensions: {[NAME]: record({bootId: 5})}}, `${f}.bootId`)
  })
  test('each field of a pending change', () => {
    const f = `pending["${NAME}"]`
    refused({pending: {[NAME]: pending({op: 'delete'})}}, `${f}.op`)
    refused({pending: {[NAME]: pending({name: 'x'})}}, `${f}.name`)
    refused({pending: {[NAME]: pending({restore: null})}}, `${f}.restore`)
    refused({pending: {[NAME]: pending({pid: 'me'})}}, `${f}.pid`)
    refused({pending: {[NAME]: pending({startedAt: null})}}, `${f}.startedAt`)
    refused({pending: {[NAME]: pending({units: ['../x']})}}, `${f}.units[0]`)
  })
  test('approvals', () => {
    refused({approvals: {a: {appId: 'b', approvedAt: 'x'}}}, 'approvals["a"].appId')
    refused({approvals: {a: {appId: 'a'}}}, 'approvals["a"].approvedAt')
  })
  test('granted extras (allow): a list of the extras sysext-helper knows, on records and approvals', () => {
    assert.doesNotThrow(() => checkState({extensions: {[NAME]: record({allow: ['commands', 'boot-units']})}, approvals: {a: {appId: 'a', approvedAt: 'x', allow: ['flatpak-triggers']}}}, paths, 'f'))
    refused({extensions: {[NAME]: record({allow: 'commands'})}}, `extensions["${NAME}"].allow`)
    refused({extensions: {[NAME]: record({allow: ['everything']})}}, `extensions["${NAME}"].allow[0]`)
    refused({approvals: {a: {appId: 'a', approvedAt: 'x', allow: [1]}}}, 'approvals["a"].allow[0]')
  })
})

describe('state schema: every path a run would delete, replace or link is confined', () => {
  const f = `extensions["${NAME}"]`
  const p = `pending["${NAME}"]`
  test('record names are single path components', () => {
    for (const bad of ['../etc', 'a/b', '.', '..', '', '.hidden']) assert.equal(validExtensionName(bad), false, bad)
    assert.equal(validExtensionName(NAME), true)
    refused({extensions: {'../../etc': record({name: '../../etc'})}}, 'extensions["../../etc"]')
    refused({pending: {'a/b': pending({name: 'a/b'})}}, 'pending["a/b"]')
  })
  test('link: only TARGET/NAME of its own target', () => {
    refused({extensions: {[NAME]: record({link: '/etc/hostname'})}}, `${f}.link`)
    refused({extensions: {[NAME]: record({link: `/etc/extensions/${NAME}`})}}, `${f}.link`)
    refused({extensions: {[NAME]: record({link: `/var/lib/extensions/other`})}}, `${f}.link`)
  })
  test('stage: only STAGE_ROOT/NAME-…, equal to the link target', () => {
    refused({extensions: {[NAME]: record({stage: '/root/victimdir', linkTarget: '/root/victimdir'})}}, `${f}.stage`)
    refused({extensions: {[NAME]: record({stage: '/var/lib/sysext-helper/stage', linkTarget: '/var/lib/sysext-helper/stage'})}}, `${f}.stage`)
    refused({extensions: {[NAME]: record({stage: `/var/lib/sysext-helper/stage/other-1`, linkTarget: `/var/lib/sysext-helper/stage/other-1`})}}, `${f}.stage`)
    refused({extensions: {[NAME]: record({stage: `${STAGE}/../../..`, linkTarget: `${STAGE}/../../..`})}}, `${f}.linkTarget`)
    refused({extensions: {[NAME]: record({stage: `/var/lib/sysext-helper/stage/${NAME}-a/b`, linkTarget: `/var/lib/sysext-helper/stage/${NAME}-a/b`})}}, `${f}.stage`)
    refused({extensions: {[NAME]: record({linkTarget: '/srv/elsewhere'})}}, `${f}.linkTarget`)
  })
  test('linkTarget: absolute and normalized; into the stage root only as a stage of NAME', () => {
    refused({extensions: {[NAME]: record({stage: undefined, linkTarget: 'relative'})}}, `${f}.linkTarget`)
    refused({extensions: {[NAME]: record({stage: undefined, linkTarget: '/var/lib/sysext-helper/stage/other-1'})}}, `${f}.linkTarget`)
    // In place: the link points at a root-owned source tree (read, never deleted).
    checkState({extensions: {[NAME]: record({stage: undefined, linkTarget: '/srv/ext'})}}, paths, 'f')
  })
  test('pending restore links: only TARGET/NAME in the three extension directories', () => {
    refused({pending: {[NAME]: pending({restore: [{link: '/etc/hostname', target: null}]})}}, `${p}.restore[0].link`)
    refused({pending: {[NAME]: pending({restore: [{link: `/var/lib/extensions/${NAME}/x`, target: null}]})}}, `${p}.restore[0].link`)
    refused({pending: {[NAME]: pending({restore: [{link: '/var/lib/extensions/other', target: null}]})}}, `${p}.restore[0].link`)
    for (const dir of ['/etc/extensions', '/run/extensions', '/var/lib/extensions'])
      checkState({pending: {[NAME]: pending({restore: [{link: `${dir}/${NAME}`, target: null}]})}}, paths, 'f')
  })
  test('pending restore targets: null, a stage of NAME, or the recorded link target', () => {
    refused({pending: {[NAME]: pending({restore: [{link: `/var/lib/extensions/${NAME}`, target: '/home/alice/evil'}]})}}, `${p}.restore[0].target`)
    refused({pending: {[NAME]: pending({restore: [{link: `/var/lib/extensions/${NAME}`, target: 3}]})}}, `${p}.restore[0].target`)
    checkState({pending: {[NAME]: pending({restore: [{link: `/var/lib/extensions/${NAME}`, target: STAGE}]})}}, paths, 'f')
    checkState({extensions: {[NAME]: record({stage: undefined, linkTarget: '/srv/ext'})}, pending: {[NAME]: pending({restore: [{link: `/var/lib/extensions/${NAME}`, target: '/srv/ext'}]})}}, paths, 'f')
  })
  test('pending newStage: only STAGE_ROOT/NAME-…', () => {
    refused({pending: {[NAME]: pending({newStage: '/root/victimdir'})}}, `${p}.newStage`)
    refused({pending: {[NAME]: pending({newStage: '/var/lib/sysext-helper'})}}, `${p}.newStage`)
    refused({pending: {[NAME]: pending({newStage: '/var/lib/sysext-helper/stage/'})}}, `${p}.newStage`)
  })
  test('the predicates', () => {
    assert.equal(isStageDir(paths, NAME, STAGE), true)
    assert.equal(isStageDir(paths, NAME, `/var/lib/sysext-helper/stage/${NAME}-`), false)
    assert.equal(isStageDir(paths, NAME, `/var/lib/sysext-helper/stage/.incoming-1`), false)
    assert.equal(isManagedLink(paths, NAME, `/run/extensions/${NAME}`), true)
    assert.equal(isManagedLink(paths, NAME, `/run/extensions/${NAME}.raw`), false)
  })
})

describe('readState and writeState on disk', () => {
  const stateDir = join(scratch, 'state')
  const p: Paths = {...DEFAULT_PATHS, stateDir, lockFile: join(scratch, 'lock')}
  test('a missing file is the empty state; "null" and {"extensions":null} are STATE_INVALID', () => {
    assert.deepEqual(readState(p).extensions, {})
    writeState(p, readState(p))
    writeFileSync(join(stateDir, 'state.json'), 'null')
    assert.throws(() => readState(p), (e: unknown) => e instanceof HelperError && e.code === 'STATE_INVALID' && e.file === join(stateDir, 'state.json'))
    writeFileSync(join(stateDir, 'state.json'), '{"extensions":null}')
    assert.throws(() => readState(p), (e: unknown) => e instanceof HelperError && e.code === 'STATE_INVALID' && e.data?.field === 'extensions')
    writeFileSync(join(stateDir, 'state.json'), '{not json')
    assert.throws(() => readState(p), (e: unknown) => e instanceof HelperError && e.code === 'STATE_CORRUPT')
  })
  test('a write that fails is STATE_WRITE_FAILED naming the file, with a fix', () => {
    const q: Paths = {...p, stateDir: join(scratch, 'file-not-dir')}
    writeFileSync(q.stateDir, '')
    assert.throws(() => writeState(q, {version: 1, extensions: {}, pending: {}, approvals: {}}), (e: unknown) =>
      e instanceof HelperError && e.code === 'STATE_WRITE_FAILED' && !!e.file?.endsWith('state.json') && !!e.hint)
  })
  test('leftovers of killed runs are cleaned: temporary state files and unfinished copies only', () => {
    writeFileSync(join(stateDir, '.state.json.123.abc.tmp'), '{}')
    writeFileSync(join(stateDir, 'keep.txt'), '')
    const removed = cleanLeftovers(p)
    assert.deepEqual(removed, [join(stateDir, '.state.json.123.abc.tmp')])
    assert.deepEqual(readdirSync(stateDir).sort(), ['keep.txt', 'state.json'])
  })
})
