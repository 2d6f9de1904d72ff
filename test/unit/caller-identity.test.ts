import assert from 'node:assert/strict'
import {mkdirSync, mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {describe, it} from 'node:test'
import {appFromFlatpakInfo, describeIdentity, flatpakIdentity} from '../../src/helper/caller-identity.js'

/** A fake /proc with one process. */
function fakeProc(pid: number, opts: {uid: number; start?: string; flatpakInfo?: string; cgroup?: string}): string {
  const proc = mkdtempSync(join(tmpdir(), 'fake-proc-'))
  const dir = join(proc, String(pid))
  mkdirSync(join(dir, 'root'), {recursive: true})
  const fields = Array.from({length: 50}, (_, i) => String(i))
  fields[19] = opts.start ?? '123456'
  writeFileSync(join(dir, 'stat'), `${pid} (some (odd) name) ${fields.join(' ')}\n`)
  writeFileSync(join(dir, 'status'), `Name:\tx\nUid:\t${opts.uid}\t${opts.uid}\t${opts.uid}\t${opts.uid}\n`)
  if (opts.flatpakInfo !== undefined) writeFileSync(join(dir, 'root', '.flatpak-info'), opts.flatpakInfo)
  writeFileSync(join(dir, 'cgroup'), opts.cgroup ?? '0::/user.slice/user-1000.slice/session-2.scope\n')
  return proc
}

describe('caller identity', () => {
  it("reads the app id from the caller's /.flatpak-info, read through an fd of its /proc directory without a pidfd", () => {
    const proc = fakeProc(4242, {uid: 1000, flatpakInfo: '[Application]\nname=org.example.App\nruntime=x\n\n[Instance]\ninstance-id=1\n', cgroup: '0::/user.slice/app-flatpak-org.example.App-77.scope\n'})
    const id = flatpakIdentity(4242, 1000, undefined, proc)
    assert.deepEqual(id, {flatpakApp: 'org.example.App', pinned: 'procfd', scopeApp: 'org.example.App'})
    assert.equal(describeIdentity({uid: 1000, pid: 4242, ...id}), 'uid=1000 pid=4242 app=org.example.App identity=procfd')
  })

  it('a user-made app-flatpak-FAKE-1.scope is only a cross-check: no app id without /.flatpak-info', () => {
    const proc = fakeProc(4243, {uid: 1000, cgroup: '0::/user.slice/user@1000.service/app.slice/app-flatpak-FAKE-1.scope\n'})
    const id = flatpakIdentity(4243, 1000, undefined, proc)
    assert.equal(id.flatpakApp, undefined)
    assert.equal(id.pinned, 'not-flatpak')
    assert.equal(id.scopeApp, 'FAKE')
    assert.match(describeIdentity({uid: 1000, pid: 4243, ...id}), /identity=not-flatpak scope-app=FAKE\(unverified\)$/)
  })

  it('refuses an identity when the process at the pid is not of the uid the bus reported (pid reused)', () => {
    const proc = fakeProc(4244, {uid: 0, flatpakInfo: '[Application]\nname=org.example.App\n'})
    assert.deepEqual(flatpakIdentity(4244, 1000, undefined, proc), {pinned: 'raced', scopeApp: undefined})
    assert.equal(flatpakIdentity(4245, 1000, undefined, proc).pinned, 'raced')
  })

  it('takes only a well-formed [Application] name', () => {
    assert.equal(appFromFlatpakInfo('[Runtime]\nname=org.x.Runtime\n'), undefined)
    assert.equal(appFromFlatpakInfo('[Application]\nname=not an id\n'), undefined)
    assert.equal(appFromFlatpakInfo('[Instance]\nname=org.a.B\n[Application]\nname=org.c.D\n'), 'org.c.D')
  })
})
