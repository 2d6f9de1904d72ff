/** Every rule id is exercised by at least one unit test (the issue: "each with a test that fails without it"). */
import assert from 'node:assert/strict'
import {readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'
import {allRules} from '../../src/sysext/rules/index.js'
import {REPO_ROOT} from '../lib/fixtures.js'

test('every rule id appears in a unit test', () => {
  const dir = join(REPO_ROOT, 'test/unit')
  const tests = readdirSync(dir).filter((f) => f.endsWith('.test.ts') && f !== 'rule-coverage.test.ts').map((f) => readFileSync(join(dir, f), 'utf8')).join('\n')
  const untested = Object.keys(allRules()).filter((rule) => !tests.includes(`'${rule}'`) && !tests.includes(`"${rule}"`) && !tests.includes(`\`${rule}`))
  assert.deepEqual(untested, [])
})
