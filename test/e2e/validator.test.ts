/**
 * The validator against real hosts (issue 11): symbol versions of real Debian 13
 * binaries on Debian 12, a service running as a new system user created from the
 * extension's sysusers.d, and an activation failing for a missing library that
 * the error names. One boot per host; trees are built here and copied in.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, lstatSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {validate} from '../../src/sysext/index.js'
import {parseElfFile} from '../../src/formats/elf.js'
import {FLAVORS, type Host, REPO_ROOT, bootHost, canRunE2e, ensureRoots} from './lib/hosts.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
const roots = Object.fromEntries((await ensureRoots()).map((r) => [r.flavor, r.root])) as Record<'debian12' | 'debian13', string>

const scratch = mkdtempSync(join(tmpdir(), 'sysext-validator-e2e-'))
process.once('exit', () => rmSync(scratch, {recursive: true, force: true}))

type Files = Record<string, string | {content: string | Buffer; mode: number}>
function writeTree(dir: string, files: Files): string {
  for (const [rel, spec] of Object.entries(files)) {
    const abs = join(dir, rel)
    mkdirSync(dirname(abs), {recursive: true})
    if (typeof spec === 'string') writeFileSync(abs, spec)
    else {
      writeFileSync(abs, spec.content)
      chmodSync(abs, spec.mode)
    }
  }
  return dir
}

const PYTHON_SERVICE = (name: string, path: string): string => readFileSync(join(REPO_ROOT, 'test/fixtures/e2e/good/usr/libexec/sysext-helper-test/test1-service'), 'utf8')
  .replaceAll('org.sysexthelper.Test1', name).replaceAll('/org/sysexthelper/Test1', path)

/** An activatable service: python script, unit (extra [Service] lines), service file, policy owned by `owner`. */
function serviceTree(name: string, short: string, opts: {owner?: string; serviceUser?: string; unitExtra?: string; extra?: Files} = {}): Files {
  const unit = `sysext-helper-${short}.service`
  const exec = `/usr/libexec/sysext-helper-${short}/service`
  return {
    [`usr/libexec/sysext-helper-${short}/service`]: {content: PYTHON_SERVICE(name, `/org/sysexthelper/${short}`), mode: 0o755},
    [`usr/lib/systemd/system/${unit}`]: `[Service]\nType=dbus\nBusName=${name}\nExecStart=${exec}\n${opts.unitExtra ?? ''}`,
    [`usr/share/dbus-1/system-services/${name}.service`]: `[D-BUS Service]\nName=${name}\nExec=${exec}\nUser=${opts.serviceUser ?? 'root'}\nSystemdService=${unit}\n`,
    [`usr/share/dbus-1/system.d/${name}.conf`]: `<?xml version="1.0"?>\n<busconfig>\n  <policy user="${opts.owner ?? 'root'}">\n    <allow own="${name}"/>\n  </policy>\n  <policy context="default">\n    <allow send_destination="${name}" send_interface="org.freedesktop.DBus.Peer"/>\n  </policy>\n</busconfig>\n`,
    ...opts.extra,
  }
}

/** ELF programs of a root that need only libc (so only symbol versions can stand in the way). */
function libcOnlyPrograms(root: string, limit: number): string[] {
  const out: string[] = []
  for (const name of readdirSync(join(root, 'usr/bin')).sort()) {
    const p = join(root, 'usr/bin', name)
    try {
      if (!lstatSync(p).isFile()) continue
      const elf = parseElfFile(p)
      if (!elf.malformed && elf.needed.length === 1 && elf.needed[0] === 'libc.so.6' && elf.verneed) out.push(p)
    } catch {
      // not an ELF file
    }
    if (out.length >= limit) break
  }
  return out
}

describe('exec-symbol-version-missing with real Debian binaries (no boot)', () => {
  test('Debian 13 programs are refused against the Debian 12 root; Debian 12 programs pass against Debian 13', () => {
    for (const [from, to, expectRefused] of [['debian13', 'debian12', true], ['debian12', 'debian13', false]] as const) {
      const programs = libcOnlyPrograms(roots[from], 40)
      assert.ok(programs.length >= 20, `${from}: ${programs.length} programs`)
      const tree = join(scratch, `${from}-on-${to}`)
      const files: Files = {'usr/lib/extension-release.d/extension-release.org.sysexthelper.Bins': 'ID=_any\n'}
      for (const p of programs) files[`usr/libexec/sysext-helper-bins/${p.split('/').pop()}`] = {content: readFileSync(p), mode: 0o755}
      writeTree(tree, files)
      const report = validate(tree, {name: 'org.sysexthelper.Bins', hostRoot: roots[to]}).report
      const versions = report.findings.filter((f) => f.rule === 'exec-symbol-version-missing')
      const otherExec = report.findings.filter((f) => f.rule.startsWith('exec-') && f.rule !== 'exec-symbol-version-missing')
      assert.deepEqual(otherExec, [], `${from} on ${to}: only symbol versions may differ`)
      if (expectRefused) {
        assert.ok(versions.length >= 5, `${from} on ${to}: ${versions.length} refused of ${programs.length}`)
        for (const f of versions) assert.match(f.message, /needs GLIBC_2\.(3[7-9]|4\d)[^ ]* .*from libc\.so\.6; this host's glibc \(.*\) provides up to GLIBC_2\.36;/)
        console.log(`# ${from} on ${to}: ${versions.length} of ${programs.length} programs refused, e.g. ${versions[0].message}`)
      } else {
        assert.deepEqual(versions, [], `${from} on ${to}`)
      }
    }
  })
})

const GLIBC = 'org.sysexthelper.Glibc1'
const USERS = 'org.sysexthelper.Users1'
const LIBMISSING = 'org.sysexthelper.Libmissing1'
const NEW_USER = 'sxhusers1'

/** A C helper that needs libsxhmissing.so.1 (built here, never shipped): ld.so fails at start. */
function helperNeedingMissingLibrary(): Buffer {
  const dir = join(scratch, 'cc')
  mkdirSync(dir, {recursive: true})
  writeFileSync(join(dir, 'lib.c'), 'int sxh_missing(void) { return 0; }\n')
  writeFileSync(join(dir, 'main.c'), 'int sxh_missing(void);\nint main(void) { return sxh_missing(); }\n')
  execFileSync('cc', ['-shared', '-fPIC', '-Wl,-soname,libsxhmissing.so.1', '-o', join(dir, 'libsxhmissing.so.1'), join(dir, 'lib.c')])
  execFileSync('cc', ['-o', join(dir, 'helper'), join(dir, 'main.c'), join(dir, 'libsxhmissing.so.1')])
  return readFileSync(join(dir, 'helper'))
}

for (const flavor of FLAVORS) {
  describe(`validator on a booted ${flavor}`, {concurrency: false}, () => {
    let host: Host
    before(async () => {
      host = await bootHost(flavor)
    })
    after(async () => {
      await host?.stop()
    })

    const put = (name: string, files: Files): string => {
      const guest = `/var/tmp/validator/${name}`
      rmSync(join(host.root, guest), {recursive: true, force: true})
      writeTree(join(host.root, guest), files)
      return guest
    }
    const install = async (path: string, name: string) => {
      const r = await host.cli(['install', path, '--name', name, '--json'], {timeout: 180_000})
      return {...r, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined}
    }
    const merged = async (): Promise<string> => (await host.sh('cat /usr/.systemd-sysext/extensions 2>/dev/null; ls /var/lib/extensions 2>/dev/null')).stdout

    test(`real Debian 13 binaries: ${flavor === 'debian12' ? 'refused by the symbol-version rule before anything is merged' : 'install and run'}`, async () => {
      const tool = join(roots.debian13, 'usr/bin/renice')
      assert.ok(parseElfFile(tool).verneed?.some((v) => v.versions.includes('GLIBC_2.38')), 'renice of Debian 13 needs GLIBC_2.38')
      const path = put('glibc', serviceTree(GLIBC, 'glibc1', {
        unitExtra: 'ExecStartPre=/usr/libexec/sysext-helper-glibc1/renice --version\n',
        extra: {'usr/libexec/sysext-helper-glibc1/renice': {content: readFileSync(tool), mode: 0o755}},
      }))
      const before = await merged()
      const r = await install(path, GLIBC)
      if (flavor === 'debian12') {
        assert.equal(r.exitCode, 1, r.stdout)
        assert.equal(r.json.error.code, 'INSTALL_INVALID')
        const f = r.json.error.data.findings.filter((x: {rule: string}) => x.rule === 'exec-symbol-version-missing')
        assert.equal(f.length, 1, JSON.stringify(r.json.error.data.findings))
        assert.match(f[0].message, /^usr\/libexec\/sysext-helper-glibc1\/renice needs GLIBC_2\.38 from libc\.so\.6; this host's glibc \(.*\) provides up to GLIBC_2\.36/)
        assert.equal(await merged(), before, 'nothing merged or linked')
        // And what the rule predicts is what the loader says on this host.
        const run = await host.exec(`/var/tmp/validator/glibc/usr/libexec/sysext-helper-glibc1/renice`, ['--version'])
        assert.match(run.stderr, /version `GLIBC_2\.38' not found/)
      } else {
        assert.equal(r.exitCode, 0, r.stderr + r.stdout)
        assert.deepEqual(r.json.verification.busNames, [{name: GLIBC, ok: true}])
        assert.equal((await host.exec('systemctl', ['show', '-p', 'ExecMainStatus', '--value', 'sysext-helper-glibc1.service'])).stdout.trim(), '0')
        assert.equal((await host.cli(['uninstall', GLIBC, '--json'])).exitCode, 0)
      }
    })

    test('a service running as a new system user: refused without its sysusers.d file, installed with it', async () => {
      const files = serviceTree(USERS, 'users1', {owner: NEW_USER, serviceUser: NEW_USER, unitExtra: `User=${NEW_USER}\n`})
      const without = await install(put('users-without', files), USERS)
      assert.equal(without.exitCode, 1, without.stdout)
      assert.equal(without.json.error.code, 'INSTALL_INVALID')
      const rules = without.json.error.data.findings.map((f: {rule: string; file: string}) => `${f.rule} ${f.file}`)
      assert.ok(rules.includes('user-missing usr/lib/systemd/system/sysext-helper-users1.service'), rules.join('\n'))
      assert.ok(rules.includes(`user-missing usr/share/dbus-1/system.d/${USERS}.conf`), rules.join('\n'))
      assert.equal((await host.exec('getent', ['passwd', NEW_USER])).exitCode, 2, 'no user created by a refused install')

      const withFile = await install(put('users-with', {...files, [`usr/lib/sysusers.d/${USERS}.conf`]: `u ${NEW_USER} - "sysext-helper e2e service user"\n`}), USERS)
      assert.equal(withFile.exitCode, 0, withFile.stderr + withFile.stdout)
      assert.deepEqual(withFile.json.verification.busNames, [{name: USERS, ok: true}])
      const entry = await host.execOk('getent', ['passwd', NEW_USER])
      const uid = Number(entry.stdout.split(':')[2])
      assert.ok(uid > 0 && uid < 1000, `a system user: ${entry.stdout}`)
      const owner = await host.execOk('busctl', ['call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetConnectionUnixUser', 's', USERS])
      assert.equal(owner.stdout.trim(), `u ${uid}`, 'the service answers as the new user')
      // Validating again while merged (an update): the account exists now, but it is the extension's own.
      const again = await host.cli(['validate', '/var/tmp/validator/users-with', '--name', USERS, '--json'])
      const errors = JSON.parse(again.stdout).findings.filter((f: {severity: string; rule: string}) => f.severity === 'error' && f.rule !== 'release-missing')
      assert.deepEqual(errors, [], 'the tree has no release file of its own (install generated one in its stage); nothing else is wrong')
      assert.equal((await host.cli(['uninstall', USERS, '--json'])).exitCode, 0)
    })

    test('an activation failing for a missing library names the library in the error', async () => {
      // ld.so runs the helper as a plain file, as a dlopen() would load a plugin: nothing the validator can see.
      const path = put('libmissing', serviceTree(LIBMISSING, 'libmissing1', {
        extra: {'usr/libexec/sysext-helper-libmissing1/helper': {content: helperNeedingMissingLibrary(), mode: 0o644}},
      }))
      // The unit starts the helper (which fails to load) instead of the service.
      const unitPath = join(host.root, path, 'usr/lib/systemd/system/sysext-helper-libmissing1.service')
      writeFileSync(unitPath, readFileSync(unitPath, 'utf8').replace(/^ExecStart=.*$/m, 'ExecStart=/lib64/ld-linux-x86-64.so.2 /usr/libexec/sysext-helper-libmissing1/helper'))
      const before = await merged()
      const r = await install(path, LIBMISSING)
      assert.equal(r.exitCode, 1, r.stdout)
      assert.equal(r.json.error.code, 'INSTALL_VERIFY_FAILED')
      console.log(`# ${flavor}: ${r.json.error.message}`)
      assert.match(r.json.error.message, /libsxhmissing\.so\.1/)
      assert.match(r.json.error.message, /error while loading shared libraries/)
      const failure = r.json.error.data.verification.busNames[0].failure
      assert.equal(failure.journalCause.cause, 'missing-library')
      assert.equal(failure.journalCause.subject, 'libsxhmissing.so.1')
      assert.ok(failure.journal.length > 0)
      assert.equal(await merged(), before, 'rolled back')
    })
  })
}

