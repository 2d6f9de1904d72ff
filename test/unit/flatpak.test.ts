import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {HelperError} from '../../src/errors.js'
import {findApp, systemInstallations} from '../../src/flatpak/installations.js'
import {makeTree} from '../lib/fixtures.js'

/** A fake installation: BASE/app/ID/current -> x86_64/stable, stable/active -> <commit>. */
function deploy(appId: string, commit = 'abc123'): Record<string, {symlink: string} | string | {dir: true}> {
  return {
    [`app/${appId}/current`]: {symlink: 'x86_64/stable'},
    [`app/${appId}/x86_64/stable/active`]: {symlink: commit},
    [`app/${appId}/x86_64/stable/${commit}/deploy`]: '',
    [`app/${appId}/x86_64/stable/${commit}/metadata`]: `[Application]\nname=${appId}\n`,
    [`app/${appId}/x86_64/stable/${commit}/files/lib/extensions/usr/share/x`]: 'x',
  }
}

describe('Flatpak system installations', () => {
  test('default installation plus [Installation "ID"] groups from installations.d', () => {
    const config = makeTree({
      'installations.d/extra.conf': '[Installation "extra"]\nPath=/srv/flatpak-extra\nDisplayName=Extra apps\nStorageType=harddisk\n\n[Installation "sd.card"]\nPath=/media/sd\n',
      'installations.d/ignored.txt': '[Installation "nope"]\nPath=/nope\n',
      'installations.d/broken.conf': '[Installation "nopath"]\nDisplayName=No path\n',
    })
    const found = systemInstallations({systemDir: '/var/lib/flatpak', configDir: config})
    assert.deepEqual(found.map((i) => [i.id, i.path]), [['default', '/var/lib/flatpak'], ['extra', '/srv/flatpak-extra'], ['sd.card', '/media/sd']])
    assert.equal(found[1].displayName, 'Extra apps')
  })

  test('an app is found in a secondary installation, resolved through current/active', () => {
    const base = makeTree({'.keep': ''})
    const extra = makeTree(deploy('org.example.App', 'c0ffee'))
    const config = makeTree({'installations.d/x.conf': `[Installation "extra"]\nPath=${extra}\n`})
    const app = findApp('org.example.App', {systemDir: base, configDir: config, userDir: '/nonexistent'})
    assert.equal(app.installation.id, 'extra')
    assert.equal(app.commit, 'c0ffee')
    assert.equal(app.extensions, `${extra}/app/org.example.App/current/active/files/lib/extensions`)
  })

  test('--installation restricts the search, and a user installation is refused', () => {
    const base = makeTree(deploy('org.example.App'))
    const user = makeTree(deploy('org.example.App'))
    const config = makeTree({'.keep': ''})
    assert.throws(() => findApp('org.example.App', {systemDir: base, configDir: config, userDir: user, installationPath: user}),
      (e: HelperError) => e.code === 'FLATPAK_USER_INSTALLATION' && e.exit === 1 && /per-user/.test(e.message))
    assert.equal(findApp('org.example.App', {systemDir: base, configDir: config, userDir: user, installationPath: base}).installation.id, 'default')
  })

  test('an app installed only per-user is refused with a hint', () => {
    const base = makeTree({'.keep': ''})
    const user = makeTree(deploy('org.example.App'))
    assert.throws(() => findApp('org.example.App', {systemDir: base, configDir: base, userDir: user}),
      (e: HelperError) => e.code === 'FLATPAK_USER_INSTALLATION' && /flatpak install --system/.test(e.hint ?? ''))
  })

  test('a missing app names every installation searched', () => {
    const base = makeTree({'.keep': ''})
    const config = makeTree({'installations.d/x.conf': '[Installation "extra"]\nPath=/srv/extra\n'})
    assert.throws(() => findApp('org.example.Missing', {systemDir: base, configDir: config, userDir: '/nonexistent'}),
      (e: HelperError) => e.code === 'FLATPAK_APP_NOT_INSTALLED' && e.message.includes(base) && e.message.includes('/srv/extra'))
  })
})
