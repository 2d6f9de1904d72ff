/**
 * The main job on a machine without systemd as PID 1: boot a real Debian host
 * (systemd-nspawn) and run `sysext-helper install` of the fixture app inside it,
 * then show that an unprivileged user activates the service, then uninstall.
 * Usage: npm run demo [-- debian12|debian13]
 */
import {type Flavor, TESTER, bootHost, ensureRoot, fixturePath} from '../test/e2e/lib/hosts.js'

const flavor = (process.argv[2] ?? 'debian13') as Flavor
await ensureRoot(flavor)
const host = await bootHost(flavor)
const show = async (title: string, result: Promise<{stdout: string; stderr: string; exitCode: number}>): Promise<void> => {
  const r = await result
  process.stdout.write(`\n$ ${title}   (exit ${r.exitCode})\n${r.stderr}${r.stdout}\n`)
}
try {
  await show('sysext-helper doctor', host.cli(['doctor']))
  await show('sysext-helper install test/fixtures/e2e/good --name org.sysexthelper.Test1', host.cli(['install', fixturePath('good'), '--name', 'org.sysexthelper.Test1']))
  await show(`(as ${TESTER.name}) busctl call org.sysexthelper.Test1 ... Hello`, host.exec('busctl', ['call', 'org.sysexthelper.Test1', '/org/sysexthelper/Test1', 'org.sysexthelper.Test1', 'Hello'], {user: TESTER.name}))
  await show('sysext-helper status org.sysexthelper.Test1', host.cli(['status', 'org.sysexthelper.Test1']))
  await show('sysext-helper install test/fixtures/e2e/dies --name org.sysexthelper.Dies1', host.cli(['install', fixturePath('dies'), '--name', 'org.sysexthelper.Dies1'], {timeout: 120_000}))
  await show('sysext-helper list', host.cli(['list']))
  await show('sysext-helper uninstall org.sysexthelper.Test1', host.cli(['uninstall', 'org.sysexthelper.Test1']))
} finally {
  await host.stop()
}
