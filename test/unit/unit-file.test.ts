import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {parseExecCommand, parseUnitFile, unitValue, unitValues} from '../../src/formats/unit-file.js'

const values = (text: string, section: string, key: string): string[] =>
  unitValues(parseUnitFile(text), section, key).map((a) => a.value)

describe('parseUnitFile reads unit files as systemd config_parse() does', () => {
  test('sections, keys and values with surrounding whitespace stripped', () => {
    const unit = parseUnitFile('[Unit]\nDescription = Example helper \n\n[Service]\nType=dbus\n')
    assert.deepEqual(unit.sections.map((s) => [s.name, s.line]), [['Unit', 1], ['Service', 4]])
    assert.deepEqual(unitValue(unit, 'Unit', 'Description'), {key: 'Description', value: 'Example helper', line: 2})
    assert.equal(unitValue(unit, 'Service', 'Type')?.value, 'dbus')
    assert.deepEqual(unit.problems, [])
  })

  test('repeated keys are kept in order; an empty assignment resets the list', () => {
    const text = '[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStartPre=\nExecStartPre=/bin/c\nExecStartPre=/bin/d\n'
    assert.deepEqual(values(text, 'Service', 'ExecStartPre'), ['/bin/c', '/bin/d'])
    assert.deepEqual(unitValues(parseUnitFile(text), 'Service', 'ExecStartPre').map((a) => a.line), [5, 6])
  })

  test('an empty assignment leaves a single-valued key unset', () => {
    assert.equal(unitValue(parseUnitFile('[Service]\nType=dbus\nType=\n'), 'Service', 'Type'), undefined)
  })

  test('a repeated section header continues the same section', () => {
    const unit = parseUnitFile('[Service]\nExecStart=/bin/a\n[Unit]\nDescription=x\n[Service]\nExecStartPost=/bin/b\n')
    assert.equal(unit.sections.length, 2)
    assert.equal(unitValue(unit, 'Service', 'ExecStart')?.value, '/bin/a')
    assert.equal(unitValue(unit, 'Service', 'ExecStartPost')?.value, '/bin/b')
  })

  test('# and ; start comments only at the beginning of a line', () => {
    const text = '# comment\n; comment\n[Service]\n  # indented comment\nEnvironment=A=1 ;not a comment #nor this\n'
    assert.deepEqual(values(text, 'Service', 'Environment'), ['A=1 ;not a comment #nor this'])
    assert.deepEqual(parseUnitFile(text).problems, [])
  })

  test('a trailing backslash continues the line with a space; the assignment keeps its first line', () => {
    const unit = parseUnitFile('[Service]\nExecStart=/usr/bin/foo \\\n  --bar \\\n  --baz\nType=simple\n')
    assert.deepEqual(unitValue(unit, 'Service', 'ExecStart'), {key: 'ExecStart', value: '/usr/bin/foo    --bar    --baz', line: 2})
    assert.equal(unitValue(unit, 'Service', 'Type')?.value, 'simple')
  })

  test('comment lines inside a continuation are skipped', () => {
    assert.deepEqual(values('[Service]\nExecStart=/bin/foo \\\n# the next flag\n  --bar\n', 'Service', 'ExecStart'), ['/bin/foo    --bar'])
  })

  test('an escaped backslash at the end does not continue the line', () => {
    assert.deepEqual(values('[Service]\nEnvironment=A=x\\\\\nType=simple\n', 'Service', 'Environment'), ['A=x\\\\'])
  })

  test('a continuation at the end of the file is still parsed', () => {
    assert.deepEqual(values('[Service]\nExecStart=/bin/foo \\', 'Service', 'ExecStart'), ['/bin/foo'])
  })

  test('CRLF line ends and a UTF-8 byte order mark are accepted', () => {
    const unit = parseUnitFile('\uFEFF[Unit]\r\nDescription=x\r\n')
    assert.equal(unitValue(unit, 'Unit', 'Description')?.value, 'x')
    assert.deepEqual(unit.problems, [])
  })

  test('lines systemd ignores are reported with their line, not fatal', () => {
    const unit = parseUnitFile('Description=outside\n[Unit]\nno equals sign\n=value\nDescription=kept\n')
    assert.deepEqual(unit.problems, [
      {line: 1, message: 'Assignment outside of section, ignoring.', fatal: false},
      {line: 3, message: "Missing '=' in 'no equals sign', ignoring line.", fatal: false},
      {line: 4, message: "Missing key name before '=' in '=value', ignoring line.", fatal: false},
    ])
    assert.equal(unitValue(unit, 'Unit', 'Description')?.value, 'kept')
  })

  test('an invalid section header is fatal and stops parsing, as in systemd', () => {
    const unit = parseUnitFile('[Unit]\nDescription=x\n[Service\nExecStart=/bin/true\n')
    assert.deepEqual(unit.problems, [{line: 3, message: "Invalid section header '[Service'.", fatal: true}])
    assert.equal(unitValue(unit, 'Service', 'ExecStart'), undefined)
  })

  test('quotes or backslashes in a section header are fatal', () => {
    assert.deepEqual(parseUnitFile('[Ser"vice]\n').problems, [{line: 1, message: 'Bad characters in section header \'[Ser"vice]\'.', fatal: true}])
  })
})

describe('parseExecCommand splits Exec*= like config_parse_exec()', () => {
  test('a plain absolute path', () => {
    const cmd = parseExecCommand('/usr/libexec/helper --flag')
    assert.ok(!('error' in cmd))
    assert.equal(cmd.path, '/usr/libexec/helper')
    assert.equal(cmd.ignoreFailure, false)
  })

  test('each of the prefixes -@:+! is stripped and recorded', () => {
    const cmd = parseExecCommand('-@:+/usr/bin/foo foo-argv0 arg')
    assert.ok(!('error' in cmd))
    assert.deepEqual([cmd.path, cmd.ignoreFailure, cmd.separateArgv0, cmd.noEnvExpand, cmd.fullyPrivileged, cmd.noSetuid],
      ['/usr/bin/foo', true, true, true, true, false])
    const bang = parseExecCommand('!/usr/bin/foo')
    assert.ok(!('error' in bang))
    assert.deepEqual([bang.path, bang.noSetuid], ['/usr/bin/foo', true])
  })

  test('!! is accepted and ignored', () => {
    const cmd = parseExecCommand('!!/usr/bin/foo')
    assert.ok(!('error' in cmd))
    assert.deepEqual([cmd.path, cmd.noSetuid], ['/usr/bin/foo', false])
  })

  test('a repeated or conflicting prefix becomes part of the path and is rejected', () => {
    assert.deepEqual(parseExecCommand('--/usr/bin/foo'), {error: 'Neither a valid executable name nor an absolute path: -/usr/bin/foo'})
    assert.deepEqual(parseExecCommand('+!/usr/bin/foo'), {error: 'Neither a valid executable name nor an absolute path: !/usr/bin/foo'})
  })

  test('| runs the line through the shell: no executable to check', () => {
    const cmd = parseExecCommand('|echo hello')
    assert.ok(!('error' in cmd))
    assert.equal(cmd.viaShell, true)
  })

  test('quotes and C escapes in the first word are decoded', () => {
    const cmd = parseExecCommand('"/opt/My App/run" \'x\'')
    assert.ok(!('error' in cmd))
    assert.equal(cmd.path, '/opt/My App/run')
    const escaped = parseExecCommand('/opt/My\\x20App/run')
    assert.ok(!('error' in escaped))
    assert.equal(escaped.path, '/opt/My App/run')
    assert.deepEqual(parseExecCommand('"/usr/bin/foo'), {error: 'Invalid quoting or escaping in \'"/usr/bin/foo\''})
  })

  test('a bare name is kept for the search path; a relative path with / is rejected', () => {
    const bare = parseExecCommand('true')
    assert.ok(!('error' in bare))
    assert.equal(bare.path, 'true')
    assert.deepEqual(parseExecCommand('bin/helper'), {error: 'Neither a valid executable name nor an absolute path: bin/helper'})
    assert.deepEqual(parseExecCommand('${DIR}/helper'), {error: 'Neither a valid executable name nor an absolute path: ${DIR}/helper'})
  })

  test('directories, unnormalized paths and empty names are rejected', () => {
    assert.deepEqual(parseExecCommand('/usr/bin/'), {error: 'Executable path specifies a directory: /usr/bin/'})
    assert.deepEqual(parseExecCommand('/usr/../bin/sh'), {error: 'Executable path is not normalized: /usr/../bin/sh'})
    assert.deepEqual(parseExecCommand('/usr//bin/sh'), {error: 'Executable path is not normalized: /usr//bin/sh'})
    assert.deepEqual(parseExecCommand('-'), {error: "Empty executable name in '-'"})
  })
})
