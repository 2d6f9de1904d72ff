import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {InFlight} from '../../src/helper/bus-service.js'

describe('InFlight: calls waiting in a root service, bounded per connection and in total', () => {
  it('refuses a caller over its own limit, and others once the total is reached', () => {
    const limits = new InFlight(2, 3)
    const a1 = limits.take(':1.1')
    const a2 = limits.take(':1.1')
    assert.ok('release' in a1 && 'release' in a2)
    const a3 = limits.take(':1.1')
    assert.ok('refused' in a3)
    assert.equal(a3.refused, '2 from :1.1, 2 in total; limits 2 and 3')
    const b1 = limits.take(':1.2')
    assert.ok('release' in b1)
    const c1 = limits.take(':1.3')
    assert.ok('refused' in c1, 'the total is reached: a new caller is refused too')
    assert.equal(limits.total, 3)
  })

  it('gives slots back on release, once only', () => {
    const limits = new InFlight(1, 2)
    const a = limits.take(':1.1')
    assert.ok('release' in a)
    a.release()
    a.release()
    assert.equal(limits.total, 0, 'a second release of the same slot frees nothing more')
    const again = limits.take(':1.1')
    assert.ok('release' in again, 'the caller may wait again after its call ended')
    const other = limits.take(':1.2')
    assert.ok('release' in other)
    assert.ok('refused' in limits.take(':1.3'))
    again.release()
    assert.ok('release' in limits.take(':1.3'))
  })
})
