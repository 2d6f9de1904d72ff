import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {classifyJournal} from '../../src/systemd/journal.js'

describe('classifyJournal: the cause of a failed activation from journal lines', () => {
  test('a missing library', () => {
    const c = classifyJournal(['Started x.', '/usr/libexec/foo: error while loading shared libraries: libfoo.so.3: cannot open shared object file: No such file or directory', 'x.service: Main process exited, code=exited, status=127/n/a'])
    assert.equal(c?.cause, 'missing-library')
    assert.equal(c?.subject, 'libfoo.so.3')
  })
  test('a missing symbol version', () => {
    const c = classifyJournal(["/usr/libexec/foo: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /usr/libexec/foo)"])
    assert.equal(c?.cause, 'missing-symbol-version')
    assert.equal(c?.subject, 'GLIBC_2.38')
  })
  test('a missing user, in the words of rtkit and of systemd', () => {
    assert.deepEqual([classifyJournal(["Failed to find user 'rtkit'."])?.cause, classifyJournal(["Failed to find user 'rtkit'."])?.subject], ['missing-user', 'rtkit'])
    assert.equal(classifyJournal(['x.service: Failed to determine user credentials: No such process'])?.cause, 'missing-user')
    assert.equal(classifyJournal(['x.service: Failed at step USER spawning /usr/libexec/x: No such process'])?.cause, 'missing-user')
  })
  test('exec format, permission, a missing binary; nothing recognised', () => {
    assert.equal(classifyJournal(['x.service: Failed to execute /usr/libexec/x: Exec format error'])?.cause, 'exec-format')
    assert.equal(classifyJournal(['x.service: Failed to execute /usr/libexec/x: Permission denied'])?.cause, 'permission')
    assert.equal(classifyJournal(['x.service: Failed to locate executable /usr/libexec/x: No such file or directory'])?.cause, 'exec-missing')
    assert.equal(classifyJournal(['Started x.', 'x.service: Deactivated successfully.']), undefined)
  })
})
