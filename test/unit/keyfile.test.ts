import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {keyFileValue, parseKeyFile} from '../../src/formats/keyfile.js'

describe('parseKeyFile follows the GKeyFile grammar', () => {
  test('group names are kept verbatim, with spaces and quotes', () => {
    const file = parseKeyFile('[D-BUS Service]\nName=org.example.App1\n\n[Installation "extra"]\nPath=/srv/flatpak\n')
    assert.deepEqual(file.groups.map((g) => [g.name, g.line]), [['D-BUS Service', 1], ['Installation "extra"', 4]])
    assert.equal(keyFileValue(file, 'D-BUS Service', 'Name'), 'org.example.App1')
    assert.equal(keyFileValue(file, 'Installation "extra"', 'Path'), '/srv/flatpak')
    assert.deepEqual(file.problems, [])
  })

  test('; is part of the value (a list separator), # starts a comment line', () => {
    const file = parseKeyFile('# comment\n[G]\nList=a;b;c;\n')
    assert.equal(keyFileValue(file, 'G', 'List'), 'a;b;c;')
    assert.deepEqual(file.problems, [])
  })

  test('escapes \\s \\n \\t \\\\ are decoded; whitespace around = is dropped', () => {
    assert.equal(keyFileValue(parseKeyFile('[G]\nK = \\sa\\tb\\nc\\\\\n'), 'G', 'K'), ' a\tb\nc\\')
  })

  test('localized keys are separate keys', () => {
    const file = parseKeyFile('[G]\nName=x\nName[de]=y\n')
    assert.equal(keyFileValue(file, 'G', 'Name'), 'x')
    assert.equal(keyFileValue(file, 'G', 'Name[de]'), 'y')
  })

  test('each problem is reported with its line', () => {
    const file = parseKeyFile('Key=before\n[G]\nnot a pair\nK=1\nK=2\n[G]\n[broken\n')
    assert.deepEqual(file.problems, [
      {line: 1, message: "key 'Key' appears before any [group] header"},
      {line: 3, message: "'not a pair' is not a key=value line"},
      {line: 5, message: "key 'K' appears twice in [G]"},
      {line: 6, message: 'group [G] appears twice'},
      {line: 7, message: "invalid group header '[broken'"},
    ])
  })
})
