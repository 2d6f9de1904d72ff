import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, test} from 'node:test'
import {type Paths, acquireLock} from '../../src/lifecycle/state.js'
import {makeTree} from '../lib/fixtures.js'

function paths(): Paths {
  const dir = makeTree({'.keep': ''})
  return {stateDir: join(dir, 'state'), lockFile: join(dir, 'run/sysext-helper.lock'), policyFile: join(dir, 'policy.conf'), targets: {persistent: '', runtime: '', local: ''}}
}

describe('the run lock', () => {
  test('holds pid and start time, and is removed on release', async () => {
    const p = paths()
    const lock = await acquireLock(p, 1000)
    assert.match(readFileSync(p.lockFile, 'utf8'), new RegExp(`^${process.pid} \\d+\\n$`))
    lock.release()
    assert.equal(existsSync(p.lockFile), false)
  })
  test('a second taker waits for the first, and says so once', async () => {
    const p = paths()
    const first = await acquireLock(p, 1000)
    const waits: number[] = []
    const second = acquireLock(p, 5000, (holder) => waits.push(holder))
    setTimeout(() => first.release(), 300)
    ;(await second).release()
    assert.deepEqual(waits, [process.pid])
  })
  test('gives up with LOCKED after the timeout while the holder lives', async () => {
    const p = paths()
    const first = await acquireLock(p, 1000)
    await assert.rejects(acquireLock(p, 200), (e: Error & {code?: string}) => e.code === 'LOCKED' && e.message.includes(String(process.pid)))
    first.release()
  })
  test("a dead holder's lock is taken over (kill -9 leaves its file behind)", async () => {
    const p = paths()
    const child = spawn('sleep', ['60'])
    const start = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')[19]
    await acquireLock(p, 100).then((l) => l.release())
    writeFileSync(p.lockFile, `${child.pid} ${start}\n`)
    child.kill('SIGKILL')
    await new Promise((r) => child.once('exit', r))
    const lock = await acquireLock(p, 2000)
    assert.match(readFileSync(p.lockFile, 'utf8'), new RegExp(`^${process.pid} `))
    lock.release()
  })
  test('concurrent takers never hold the lock at the same time', async () => {
    const p = paths()
    let inside = 0
    let overlap = false
    await Promise.all(Array.from({length: 5}, async () => {
      const lock = await acquireLock(p, 10_000)
      inside++
      if (inside > 1) overlap = true
      await new Promise((r) => setTimeout(r, 20))
      inside--
      lock.release()
    }))
    assert.equal(overlap, false)
  })
})
