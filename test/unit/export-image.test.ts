/**
 * The helper extension's own plumbing: which tree `self-install` installs,
 * judged from where the running module is, and packing a tree into a .raw image.
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {describe, test} from 'node:test'
import {HelperError} from '../../src/errors.js'
import {SELF_RELEASE, imageCommand, locateSelf, packImage, selfExtensionTree, treeForLocation} from '../../src/lifecycle/image.js'
import {DEFAULT_PATHS, type Paths} from '../../src/lifecycle/state.js'
import {makeTree} from '../lib/fixtures.js'

const has = (files: string[]) => (p: string): boolean => files.includes(p)

describe('locateSelf', () => {
  test('a bundle in an unmerged tree: the tree root', () => {
    const exists = has([`/srv/ext/${SELF_RELEASE}`])
    assert.deepEqual(locateSelf('/srv/ext/usr/lib/sysext-helper/commands.js', exists), {kind: 'tree', root: '/srv/ext'})
  })

  test('a bundle in the merged /usr: merged (the tree is not /)', () => {
    assert.deepEqual(locateSelf('/usr/lib/sysext-helper/commands.js', has([`/${SELF_RELEASE}`])), {kind: 'merged'})
  })

  test('the compiled CLI of a checkout: its dist/extension', () => {
    const exists = has(['/home/u/sysext-helper/package.json', '/home/u/sysext-helper/bin/run.js'])
    assert.deepEqual(locateSelf('/home/u/sysext-helper/dist/src/lifecycle/image.js', exists), {
      kind: 'checkout', repo: '/home/u/sysext-helper', root: '/home/u/sysext-helper/dist/extension',
    })
  })

  test('a built tree inside a checkout is a tree, not the checkout', () => {
    const exists = has([`/r/dist/extension/${SELF_RELEASE}`, '/r/package.json', '/r/bin/run.js'])
    assert.deepEqual(locateSelf('/r/dist/extension/usr/lib/sysext-helper/commands.js', exists), {kind: 'tree', root: '/r/dist/extension'})
  })

  test('anywhere else: unknown', () => {
    assert.equal(locateSelf('/opt/x/lib/y.js', has([])), undefined)
  })

  test('merged: the source tree recorded for sysext-helper; none recorded: SELF_TREE_UNKNOWN with a hint', () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'sysext-self-'))
    const paths: Paths = {...DEFAULT_PATHS, stateDir, lockFile: join(stateDir, 'lock'), targets: {persistent: stateDir, runtime: stateDir, local: stateDir}}
    try {
      assert.throws(() => treeForLocation({kind: 'merged'}, '/usr/lib/sysext-helper/commands.js', paths),
        (e: unknown) => e instanceof HelperError && e.code === 'SELF_TREE_UNKNOWN' && !!e.hint?.includes('self-install'))
      writeFileSync(join(stateDir, 'state.json'), JSON.stringify({version: 1, pending: {}, extensions: {'sysext-helper': {
        // A complete record: state.json is schema-checked on every read.
        name: 'sysext-helper', source: {kind: 'path', path: '/srv/sysext-helper-ext'}, target: 'local', link: join(stateDir, 'sysext-helper'),
        linkTarget: '/srv/sysext-helper-ext', releaseGenerated: false, hash: 'h', installedAt: 'now', busNames: [], units: [], polkitActions: [],
        touchesPolkit: false, reloadManager: false,
      }}}))
      assert.equal(treeForLocation({kind: 'merged'}, '/usr/lib/sysext-helper/commands.js', paths), '/srv/sysext-helper-ext')
    } finally {
      rmSync(stateDir, {recursive: true, force: true})
    }
  })

  test('a checkout without a build: SELF_TREE_NOT_BUILT naming npm run build:extension', () => {
    const repo = makeTree({'package.json': '{}', 'bin/run.js': ''})
    assert.throws(() => treeForLocation({kind: 'checkout', repo, root: join(repo, 'dist/extension')}, join(repo, 'dist/src/x.js')),
      (e: unknown) => e instanceof HelperError && e.code === 'SELF_TREE_NOT_BUILT' && !!e.hint?.includes('npm run build:extension'))
  })

  test('a URL of a module outside any tree or checkout: SELF_TREE_NOT_FOUND', () => {
    assert.throws(() => selfExtensionTree(pathToFileURL('/nonexistent/dir/x.js').href), (e: unknown) => e instanceof HelperError && e.code === 'SELF_TREE_NOT_FOUND')
  })
})

describe('packImage', () => {
  test('the commands: mksquashfs -all-root -noappend; mkfs.erofs --all-root', () => {
    assert.deepEqual(imageCommand('squashfs', '/t', '/o.raw').args.slice(0, 4), ['/t', '/o.raw', '-all-root', '-noappend'])
    assert.equal(imageCommand('erofs', '/t', '/o.raw').file, 'mkfs.erofs')
    assert.ok(imageCommand('erofs', '/t', '/o.raw').args.includes('--all-root'))
  })

  const mksquashfs = spawnSync('sh', ['-c', 'command -v mksquashfs'], {stdio: 'ignore'}).status === 0
  test('a squashfs image of a tree: root-owned entries, modes kept', {skip: !mksquashfs && 'mksquashfs not installed (apt-get install squashfs-tools)'}, async () => {
    const tree = makeTree({
      'usr/lib/extension-release.d/extension-release.x': {content: 'ID=_any\n', mode: 0o644},
      'usr/bin/x': {content: '#!/bin/sh\n', mode: 0o755},
      'usr/lib/x/link': {symlink: '../../bin/x'},
    })
    const out = join(mkdtempSync(join(tmpdir(), 'sysext-image-')), 'x.raw')
    const r = await packImage(tree, out)
    assert.equal(r.format, 'squashfs')
    assert.ok(r.bytes > 0)
    const list = spawnSync('unsquashfs', ['-lln', out], {encoding: 'utf8'})
    assert.equal(list.status, 0, list.stderr)
    assert.match(list.stdout, /^-rwxr-xr-x 0\/0 .* squashfs-root\/usr\/bin\/x$/m)
    assert.match(list.stdout, /^lrwxrwxrwx 0\/0 .* squashfs-root\/usr\/lib\/x\/link -> \.\.\/\.\.\/bin\/x$/m)
    // Packing again replaces the image (-noappend) rather than appending to it.
    const again = await packImage(tree, out)
    assert.equal(again.bytes, r.bytes)
    rmSync(join(out, '..'), {recursive: true, force: true})
  })

  test('a directory without usr/ is not packed', async () => {
    await assert.rejects(packImage(makeTree({'etc/x': 'x'}), '/tmp/never.raw'), (e: unknown) => e instanceof HelperError && e.code === 'TREE_NOT_FOUND')
  })
})
