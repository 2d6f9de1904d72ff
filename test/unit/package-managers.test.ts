import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, describe, test} from 'node:test'
import {packageManagerChecks} from '../../src/lifecycle/doctor.js'
import {
  CONFIG_FILE, HOOK_SCRIPT, type ModeDecision, type PackageManagerStatus, REMOVED, SYSEXT_DROPIN, applyPackageManagers, decideMode, readConfig, hookFiles, hookScript,
  mutableDropIn, presentManagers, shadowFix, writeConfigSwitch,
} from '../../src/lifecycle/package-managers.js'
import {MUTABLE_LINK, mergedMutable, mutableConfigured, parseMountinfo, sysextOverlay, usrFilesystem} from '../../src/systemd/sysext.js'

// Lines as seen in a Debian 13 guest (plain ext4 root) before and during a mutable merge, and in an overlay-rooted one.
const ROOT = '101 1 254:0 / / rw,relatime - ext4 /dev/vda rw'
const MUTABLE = '305 101 0:56 / /usr rw,nodev,noatime shared:39 - overlay sysext rw,lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/t/usr,upperdir=/usr,workdir=/.systemd-usr-workdir,redirect_dir=on,uuid=on'
const READONLY = '305 101 0:58 / /usr ro,nodev,relatime shared:39 - overlay sysext ro,lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/t/usr:/usr,redirect_dir=on'
const OVERLAY_ROOT = '90 80 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/cache/root,upperdir=/h/upper,workdir=/h/work'

describe('mountinfo', () => {
  test('the sysext overlay, its mode, and the filesystem /usr really lives on', () => {
    const mutable = parseMountinfo([ROOT, MUTABLE].join('\n'))
    assert.equal(sysextOverlay('/usr', mutable)?.fsType, 'overlay')
    assert.equal(mergedMutable('/usr', mutable), true)
    assert.equal(usrFilesystem(mutable)?.fsType, 'ext4')
    const readonly = parseMountinfo([ROOT, READONLY].join('\n'))
    assert.equal(mergedMutable('/usr', readonly), false)
    assert.equal(mergedMutable('/usr', parseMountinfo(ROOT)), false)
    assert.equal(usrFilesystem(parseMountinfo([OVERLAY_ROOT, READONLY].join('\n')))?.fsType, 'overlay')
  })
  test('escaped mount points are decoded', () => {
    assert.equal(parseMountinfo('1 0 0:1 / /a\\040b rw - tmpfs tmpfs rw')[0].mountPoint, '/a b')
  })
})

describe('decideMode', () => {
  const on = {enabled: true, forceHooks: false}
  const ext4 = usrFilesystem(parseMountinfo(ROOT))
  test('systemd >= 256 on a plain filesystem: mutable', () => {
    assert.equal(decideMode({systemdVersion: 257, usr: ext4, config: on}).mode, 'mutable')
  })
  test('systemd < 256: hooks', () => {
    assert.equal(decideMode({systemdVersion: 252, usr: ext4, config: on}).mode, 'hooks')
    assert.equal(decideMode({systemdVersion: 255, usr: ext4, config: on}).mode, 'hooks')
  })
  test('/usr on overlayfs: hooks, and the reason says why', () => {
    const d = decideMode({systemdVersion: 257, usr: usrFilesystem(parseMountinfo(OVERLAY_ROOT)), config: on})
    assert.equal(d.mode, 'hooks')
    assert.match(d.reason, /upperdir/)
  })
  test('MECHANISM=hooks: hooks on 257 too', () => {
    assert.equal(decideMode({systemdVersion: 257, usr: ext4, config: {enabled: true, forceHooks: true}}).mode, 'hooks')
  })
  test('turned off by the admin: off, whatever the version', () => {
    assert.equal(decideMode({systemdVersion: 257, usr: ext4, config: {enabled: false, forceHooks: false}}).mode, 'off')
  })
})

describe('generated files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pm-unit-'))
  after(() => rmSync(dir, {recursive: true, force: true}))

  test('the hook script is valid sh, uses only the host\'s own systemd-sysext before merging again, and is a no-op when nothing is merged', () => {
    const script = join(dir, 'hook')
    writeFileSync(script, hookScript(), {mode: 0o755})
    assert.equal(spawnSync('sh', ['-n', script]).status, 0)
    const pre = hookScript().slice(hookScript().indexOf('  pre)'), hookScript().indexOf('  post)'))
    assert.match(pre, /"\$SYSEXT" unmerge/)
    assert.doesNotMatch(pre, /sysext-helper /)
    assert.match(hookScript(), /^SYSEXT=\/usr\/bin\/systemd-sysext$/m)
    // This machine has nothing merged (no /usr/.systemd-sysext): pre does nothing and exits 0 at once.
    if (!existsSync('/usr/.systemd-sysext/extensions')) {
      const r = spawnSync('sh', [script, 'pre'], {encoding: 'utf8'})
      assert.equal(r.status, 0, r.stderr)
      assert.equal(r.stdout + r.stderr, '')
    }
    assert.equal(spawnSync('sh', [script, 'bogus']).status, 2)
  })

  test('apt: Pre-Invoke and Post-Invoke call the script; apt-config parses the file', () => {
    const [apt] = hookFiles().apt
    assert.match(apt.content, new RegExp(`^DPkg::Pre-Invoke \\{ "${HOOK_SCRIPT} pre"; \\};$`, 'm'))
    assert.match(apt.content, new RegExp(`^DPkg::Post-Invoke \\{ "${HOOK_SCRIPT} post"; \\};$`, 'm'))
    const file = join(dir, 'apt.conf')
    writeFileSync(file, apt.content)
    const dump = spawnSync('apt-config', ['-c', file, 'dump', 'DPkg::Pre-Invoke', 'DPkg::Post-Invoke'], {encoding: 'utf8'})
    if (dump.error) return // no apt on this machine
    assert.equal(dump.status, 0, dump.stderr)
    assert.match(dump.stdout, new RegExp(`DPkg::Pre-Invoke:: "${HOOK_SCRIPT} pre";`))
    assert.match(dump.stdout, new RegExp(`DPkg::Post-Invoke:: "${HOOK_SCRIPT} post";`))
  })

  test('dnf5: one actions line per callback, five colon-separated fields', () => {
    const lines = hookFiles().dnf5[0].content.split('\n').filter((l) => l && !l.startsWith('#'))
    assert.deepEqual(lines, [`pre_transaction::::${HOOK_SCRIPT} pre`, `post_transaction::::${HOOK_SCRIPT} post`])
  })

  test('dnf4: the plugin is valid Python calling the script; its conf enables it', () => {
    const [conf, plugin] = hookFiles().dnf4
    assert.match(conf.content, /^\[main\]\nenabled=1$/m)
    assert.match(plugin.content, /def pre_transaction\(self\):\n\s+subprocess\.run\(\['\/etc\/sysext-helper\/package-manager-hook', 'pre'\], check=True\)/)
    const py = spawnSync('python3', ['-c', 'import ast,sys; ast.parse(sys.stdin.read())'], {input: plugin.content, encoding: 'utf8'})
    if (!py.error) assert.equal(py.status, 0, py.stderr)
  })

  test('pacman: a PreTransaction hook that aborts on failure and a PostTransaction hook, on usr/ and opt/', () => {
    const [pre, post] = hookFiles().pacman
    for (const [h, when, verb] of [[pre, 'PreTransaction', 'pre'], [post, 'PostTransaction', 'post']] as const) {
      assert.match(h.content, /^\[Trigger\]$/m)
      assert.match(h.content, /^Type = Path$/m)
      assert.match(h.content, /^Target = usr\/\*$/m)
      assert.match(h.content, /^\[Action\]$/m)
      assert.match(h.content, new RegExp(`^When = ${when}$`, 'm'))
      assert.match(h.content, new RegExp(`^Exec = ${HOOK_SCRIPT} ${verb}$`, 'm'))
      assert.ok(h.path.endsWith('.hook'))
    }
    assert.match(pre.content, /^AbortOnFail$/m)
    assert.doesNotMatch(post.content, /AbortOnFail/)
  })

  test('the systemd-sysext.service drop-in sets the mutable mode, and falls back to a read-only merge', () => {
    const dropIn = mutableDropIn()
    assert.match(dropIn, /^\[Service\]\nEnvironment=SYSTEMD_SYSEXT_MUTABLE_MODE=auto$/m)
    assert.match(dropIn, /^ExecStart=\nExecStart=-systemd-sysext refresh\nExecStart=\/bin\/sh -c '.*SYSTEMD_SYSEXT_MUTABLE_MODE=no systemd-sysext refresh'$/m)
    const verify = spawnSync('systemd-analyze', ['--version'])
    if (verify.error) return
    const unit = join(dir, 'x.service')
    writeFileSync(unit, dropIn.replace('[Service]', '[Service]\nType=oneshot'))
    const r = spawnSync('systemd-analyze', ['verify', unit], {encoding: 'utf8'})
    assert.doesNotMatch(r.stderr, /x\.service:\d+/, r.stderr)
  })
})

describe('applyPackageManagers (in a scratch root)', () => {
  const root = mkdtempSync(join(tmpdir(), 'pm-root-'))
  after(() => rmSync(root, {recursive: true, force: true}))
  mkdirSync(join(root, 'usr/bin'), {recursive: true})
  writeFileSync(join(root, 'usr/bin/apt-get'), '')
  const hooks: ModeDecision = {mode: 'hooks', reason: 'test'}
  const mutable: ModeDecision = {mode: 'mutable', reason: 'test'}

  test('finds the package managers present', () => {
    assert.deepEqual(presentManagers(root), ['apt'])
  })

  test('hooks: the script (0755) and the apt file; a second run changes nothing', async () => {
    const r = await applyPackageManagers({decision: hooks, root, reload: false})
    assert.deepEqual(r.written, [HOOK_SCRIPT, '/etc/apt/apt.conf.d/05sysext-helper'])
    assert.equal(lstatSync(join(root, HOOK_SCRIPT)).mode & 0o777, 0o755)
    assert.equal(readFileSync(join(root, HOOK_SCRIPT), 'utf8'), hookScript())
    assert.equal(existsSync(join(root, 'etc/pacman.d')), false)
    const again = await applyPackageManagers({decision: hooks, root, reload: false})
    assert.deepEqual([again.written, again.removed], [[], []])
  })

  test('an edited file is put back', async () => {
    writeFileSync(join(root, 'etc/apt/apt.conf.d/05sysext-helper'), '// edited\n')
    assert.deepEqual((await applyPackageManagers({decision: hooks, root, reload: false})).written, ['/etc/apt/apt.conf.d/05sysext-helper'])
  })

  test('switching to mutable removes the hooks and adds the drop-in and the symlink', async () => {
    const r = await applyPackageManagers({decision: mutable, root, reload: false})
    assert.deepEqual(r.written, [SYSEXT_DROPIN, MUTABLE_LINK])
    assert.deepEqual(r.removed, [HOOK_SCRIPT, '/etc/apt/apt.conf.d/05sysext-helper'])
    assert.equal(readlinkSync(join(root, MUTABLE_LINK)), '/usr')
    assert.equal(mutableConfigured(join(root, MUTABLE_LINK)), true)
  })

  test('removed: nothing is left', async () => {
    const r = await applyPackageManagers({decision: REMOVED, root, reload: false})
    assert.deepEqual(r.removed, [SYSEXT_DROPIN, MUTABLE_LINK])
    assert.equal(existsSync(join(root, MUTABLE_LINK)), false)
  })

  test('a directory where the symlink goes is refused with a fix', async () => {
    mkdirSync(join(root, MUTABLE_LINK), {recursive: true})
    await assert.rejects(applyPackageManagers({decision: mutable, root, reload: false}), (e: Error & {code?: string; hint?: string}) => e.code === 'PACKAGE_MANAGERS_LINK_TAKEN' && /Move it away/.test(e.hint ?? ''))
    rmSync(join(root, MUTABLE_LINK), {recursive: true})
  })

  test('the config switch: ENABLED=no turns it off; MECHANISM=hooks is kept across switches', () => {
    assert.deepEqual(readConfig(root), {enabled: true, forceHooks: false})
    writeConfigSwitch(false, root)
    assert.deepEqual(readConfig(root), {enabled: false, forceHooks: false})
    assert.match(readFileSync(join(root, CONFIG_FILE), 'utf8'), /^ENABLED=no$/m)
    writeFileSync(join(root, CONFIG_FILE), 'ENABLED=no\nMECHANISM=hooks\n')
    writeConfigSwitch(true, root)
    assert.deepEqual(readConfig(root), {enabled: true, forceHooks: true})
  })
})

describe('doctor: package-manager checks', () => {
  const base: PackageManagerStatus = {mode: 'mutable', reason: 'systemd 257', managers: ['apt'], files: [{path: SYSEXT_DROPIN, state: 'ok'}], linkOk: true, mergedMutable: true, unmergedByHook: false}
  const byId = (checks: ReturnType<typeof packageManagerChecks>) => Object.fromEntries(checks.map((c) => [c.id, c]))

  test('all in place, merged writable, no shadows: every check ok', () => {
    const c = packageManagerChecks(base, ['a'], [])
    assert.ok(c.every((x) => x.ok), JSON.stringify(c))
    assert.deepEqual(Object.keys(byId(c)), ['package-managers', 'package-manager-files', 'mutable-merge', 'upper-shadows'])
  })
  test('merged read-only although set up: a warning with the refresh that fixes it', () => {
    const c = byId(packageManagerChecks({...base, mergedMutable: false}, ['a'], undefined))
    assert.equal(c['mutable-merge'].ok, false)
    assert.match(c['mutable-merge'].fix ?? '', /^systemd-sysext refresh --mutable=auto; if that fails, add MECHANISM=hooks/)
  })
  test('a missing file and a missing symlink are named', () => {
    const c = byId(packageManagerChecks({...base, files: [{path: SYSEXT_DROPIN, state: 'missing'}], linkOk: false}, [], undefined))
    assert.match(c['package-manager-files'].message, /sysext-helper-mutable\.conf missing.*extensions\.mutable\/usr missing/)
    assert.equal(c['package-manager-files'].fix, 'sysext-helper package-managers --enable')
  })
  test('shadows: each path, its kind and its extension; the fix removes them underneath', () => {
    const shadows = [{path: '/usr/bin/x', kind: 'copy' as const, extension: 'e'}, {path: '/usr/share/y', kind: 'whiteout' as const, extension: 'e'}]
    const c = byId(packageManagerChecks(base, ['e'], shadows))
    assert.equal(c['upper-shadows'].ok, false)
    assert.match(c['upper-shadows'].message, /\/usr\/bin\/x \(copied up, e\), \/usr\/share\/y \(deleted: whiteout, e\)/)
    assert.equal(c['upper-shadows'].fix, shadowFix(shadows))
    assert.match(shadowFix(shadows), /^unshare -m sh -c 'umount -l \/usr && rm -f \/usr\/bin\/x \/usr\/share\/y'/)
  })
  test("the fix quotes an extension's own file names: a hostile name is removed, not run", () => {
    const dir = mkdtempSync(join(tmpdir(), 'shadow-fix-'))
    const name = "a b;$(touch pwned)'x"
    writeFileSync(join(dir, name), '')
    const fix = shadowFix([{path: join(dir, name), kind: 'copy', extension: 'e'}])
    // The same command line without its root-only parts (the private namespace and the refresh).
    const inner = fix.replace(/^unshare -m sh -c /, 'sh -c ').replace('umount -l /usr', 'true').replace(/ && systemd-sysext refresh --mutable=auto$/, '')
    const r = spawnSync('sh', ['-c', inner], {cwd: dir, encoding: 'utf8'})
    assert.equal(r.status, 0, r.stderr)
    assert.equal(existsSync(join(dir, name)), false, 'the shadow is removed')
    assert.equal(existsSync(join(dir, 'pwned')), false, 'nothing in the name ran')
    rmSync(dir, {recursive: true, force: true})
  })
  test('off: one warning, no file checks when nothing is left', () => {
    const c = packageManagerChecks({...base, mode: 'off', reason: 'turned off', files: [], linkOk: true}, [], undefined)
    assert.deepEqual(c.map((x) => [x.id, x.ok]), [['package-managers', false]])
  })
  test('hooks left the extensions unmerged: said, with the fix', () => {
    const c = byId(packageManagerChecks({...base, mode: 'hooks', unmergedByHook: true}, [], undefined))
    assert.equal(c['package-manager-hook'].ok, false)
    assert.match(c['package-manager-hook'].fix ?? '', /systemd-sysext refresh/)
  })
})
