/**
 * A real Flatpak sandbox in a booted test host (REFERENCE §3): a runtime made
 * of the guest's own python3 + python3-dbus and the libraries they link,
 * exported to an offline repo; the test app org.sysexthelper.App on it, with
 * an extension tree and client.py (a dbus-python client of Manager1 and of the
 * app's own service); `flatpak run` through a bwrap wrapper that drops
 * --disable-userns (nspawn mounts /proc/sys read-only). Also a polkit
 * authentication agent (python3-dbus) that cancels every dialog and prints
 * what it was asked, registered for one process.
 */
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {type ExecResult, type Host, REPO_ROOT, TESTER} from './hosts.js'

export const SANDBOX_APP = 'org.sysexthelper.App'
const DIR = '/srv/sandbox'
const BWRAP = `${DIR}/bwrap-nouserns`

const CLIENT = String.raw`import json, sys, time
import dbus
def plain(v):
    if isinstance(v, dbus.Boolean): return bool(v)
    if isinstance(v, (dict, dbus.Dictionary)): return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, dbus.Array, dbus.Struct)): return [plain(x) for x in v]
    if isinstance(v, (int, dbus.Int32, dbus.UInt32, dbus.UInt64)): return int(v)
    return str(v)
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == 'delay':
    time.sleep(float(args[0])); cmd, args = args[1], args[2:]
if cmd == 'watch':
    from dbus.mainloop.glib import DBusGMainLoop
    DBusGMainLoop(set_as_default=True)
bus = dbus.SystemBus()
m = dbus.Interface(bus.get_object('io.github.sysext_helper.Manager1', '/io/github/sysext_helper/Manager1'), 'io.github.sysext_helper.Manager1')
opts = dbus.Dictionary({k: dbus.String(v, variant_level=1) for k, v in (json.loads(args[0]) if args and cmd != 'watch' else {}).items()}, signature='sv')
def watch(state, seconds):
    # GetStatus makes this connection a listener; then ExtensionChanged until State is 'state'.
    from gi.repository import GLib
    loop, seen = GLib.MainLoop(), []
    def changed(app, status):
        seen.append([str(app), plain(status)])
        if str(status.get('State')) == state: loop.quit()
    bus.add_signal_receiver(changed, 'ExtensionChanged', 'io.github.sysext_helper.Manager1')
    first = plain(m.GetStatus())
    print('LISTENING', flush=True)
    GLib.timeout_add_seconds(int(seconds), loop.quit)
    loop.run()
    return {'first': first, 'signals': seen}
try:
    if cmd == 'watch': r = watch(*args)
    elif cmd == 'status': r = m.GetStatus()
    elif cmd == 'install': r = m.RequestInstall(opts, timeout=600)
    elif cmd == 'remove': r = m.RequestRemoval(opts, timeout=600)
    elif cmd == 'hello': r = bus.call_blocking('org.sysexthelper.Test1', '/org/sysexthelper/Test1', 'org.sysexthelper.Test1', 'Hello', '', [])
    print(json.dumps({'ok': True, 'result': plain(r)}))
except dbus.DBusException as e:
    print(json.dumps({'ok': False, 'error': e.get_dbus_name(), 'message': e.get_dbus_message()}))
`

const AGENT = String.raw`import sys
import dbus, dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
DBusGMainLoop(set_as_default=True)
class Cancelled(dbus.DBusException):
    _dbus_error_name = 'org.freedesktop.PolicyKit1.Error.Cancelled'
class Agent(dbus.service.Object):
    @dbus.service.method('org.freedesktop.PolicyKit1.AuthenticationAgent', in_signature='sssa{ss}sa(sa{sv})', out_signature='')
    def BeginAuthentication(self, action_id, message, icon, details, cookie, identities):
        print('ASKED', action_id, '|', message, flush=True)
        raise Cancelled('dismissed by the test agent')
    @dbus.service.method('org.freedesktop.PolicyKit1.AuthenticationAgent', in_signature='s', out_signature='')
    def CancelAuthentication(self, cookie):
        pass
bus = dbus.SystemBus()
agent = Agent(bus, '/test/agent')
pid = int(sys.argv[1])
start = int(open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()[19])
auth = dbus.Interface(bus.get_object('org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority'), 'org.freedesktop.PolicyKit1.Authority')
subject = ('unix-process', {'pid': dbus.UInt32(pid, variant_level=1), 'start-time': dbus.UInt64(start, variant_level=1), 'uid': dbus.Int32(${TESTER.uid}, variant_level=1)})
auth.RegisterAuthenticationAgent(subject, 'C', '/test/agent')
print('REGISTERED', pid, flush=True)
GLib.MainLoop().run()
`

/**
 * bwrap without --disable-userns (and --assert-userns-disabled), which nspawn's read-only /proc/sys
 * makes fail; flatpak >= 1.15 passes its options through `--args FD` (NUL-separated), so those are
 * filtered too, into a memfd.
 */
const BWRAP_WRAPPER = String.raw`#!/usr/bin/python3
import os, sys
DROP = {b'--disable-userns', b'--assert-userns-disabled'}
args, out, i = sys.argv[1:], [], 0
while i < len(args):
    a = args[i]
    if a.encode() in DROP:
        i += 1
        continue
    if a == '--args':
        fd, data = int(args[i + 1]), b''
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        os.close(fd)
        parts = data.split(b'\0')[:-1] if data.endswith(b'\0') else data.split(b'\0')
        new = os.memfd_create('bwrap-args', 0)
        os.write(new, b''.join(p + b'\0' for p in parts if p not in DROP))
        os.lseek(new, 0, os.SEEK_SET)
        os.set_inheritable(new, True)
        out += ['--args', str(new)]
        i += 2
        continue
    out.append(a)
    i += 1
os.execv('/usr/bin/bwrap', ['bwrap'] + out)
`

/** Builds the runtime (once per host) and publishes the app with `fixture`'s usr/ as its extension tree; installs or updates it. */
const PUBLISH = String.raw`set -eu
fixture=$1
R=${DIR}
if [ ! -d $R/repo ]; then
  rt=$R/runtime
  mkdir -p $rt/usr $rt/files
  printf '[Runtime]\nname=org.sysexthelper.PyPlatform\nruntime=org.sysexthelper.PyPlatform/x86_64/1\nsdk=org.sysexthelper.PyPlatform/x86_64/1\n' > $rt/metadata
  py=$(readlink -f /usr/bin/python3); ver=$(basename $py)
  tar -C / -cf - usr/bin/python3 usr/bin/$ver usr/lib/$ver usr/lib/python3/dist-packages usr/lib/x86_64-linux-gnu/girepository-1.0 | tar -C $rt -xf -
  # gi loads libgio through the Gio typelib (dlopen), not as a link of _gi.so: named here.
  gio=/usr/lib/x86_64-linux-gnu/libgio-2.0.so.0
  { ldd $py; find /usr/lib/$ver/lib-dynload /usr/lib/python3/dist-packages -name '*.so' -exec ldd {} \; ; ldd $gio; echo "gio => $gio"; } |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | sort -u |
    while read -r lib; do
      case $lib in /usr/*) dest=$lib ;; *) dest=/usr$lib ;; esac
      mkdir -p "$rt$(dirname "$dest")"; cp -L "$lib" "$rt$dest"
    done
  flatpak build-export --runtime $R/repo $rt 1 >/dev/null
  flatpak remote-add --system --no-gpg-verify sandbox $R/repo
  flatpak install --system -y --noninteractive sandbox org.sysexthelper.PyPlatform >/dev/null
  cp $R/bwrap-wrapper.py ${BWRAP}
  chmod 755 ${BWRAP}
fi
rm -rf $R/app
flatpak build-init $R/app ${SANDBOX_APP} org.sysexthelper.PyPlatform org.sysexthelper.PyPlatform 1 >/dev/null
mkdir -p $R/app/files/lib/extensions $R/app/files/bin
cp -a "$fixture/usr" $R/app/files/lib/extensions/
cp $R/client.py $R/readme-example.py $R/app/files/bin/
flatpak build-finish $R/app --command=python3 --system-talk-name=io.github.sysext_helper.Manager1 --system-talk-name=org.sysexthelper.Test1 >/dev/null
flatpak build-export $R/repo $R/app stable >/dev/null
if flatpak info --system ${SANDBOX_APP} >/dev/null 2>&1; then flatpak update --system -y --noninteractive ${SANDBOX_APP}
else flatpak install --system -y --noninteractive sandbox ${SANDBOX_APP}; fi
`

/** The Python/GDBus client of the README's "Requesting your helper from the app", verbatim. */
export function readmeExample(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Requesting your helper from the app'))
  const m = /```python\n([\s\S]*?)```/.exec(section)
  if (!m) throw new Error('README.md has no python example in "Requesting your helper from the app"')
  return m[1]
}

/** Publishes (and installs or updates) the sandboxed test app with `fixture` (a guest path) as its extension. */
export async function publishSandboxApp(host: Host, fixture: string): Promise<void> {
  await host.execOk('mkdir', ['-p', DIR])
  writeFileSync(join(host.root, DIR, 'client.py'), CLIENT)
  writeFileSync(join(host.root, DIR, 'agent.py'), AGENT)
  writeFileSync(join(host.root, DIR, 'publish.sh'), PUBLISH)
  writeFileSync(join(host.root, DIR, 'bwrap-wrapper.py'), BWRAP_WRAPPER)
  writeFileSync(join(host.root, DIR, 'readme-example.py'), readmeExample())
  await host.execOk('sh', [`${DIR}/publish.sh`, fixture], {timeout: 600_000})
}

export interface ClientAnswer {
  ok: boolean
  result?: Record<string, unknown>
  error?: string
  message?: string
  raw: ExecResult
}

function answer(r: ExecResult): ClientAnswer {
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return {...(JSON.parse(line) as Omit<ClientAnswer, 'raw'>), raw: r}
  } catch {
    throw new Error(`the client printed no answer (exit ${r.exitCode}): ${r.stdout}\n${r.stderr}`)
  }
}

/** The flatpak run command line of client.py (as the tester), for a shell. */
export function sandboxCommand(args: string[]): string {
  return `FLATPAK_BWRAP=${BWRAP} flatpak run --system ${SANDBOX_APP} /app/bin/client.py ${args.map((a) => `'${a}'`).join(' ')}`
}

/** client.py inside the real sandbox, as the tester. */
export async function inSandbox(host: Host, args: string[]): Promise<ClientAnswer> {
  return answer(await host.sh(sandboxCommand(args), {user: TESTER.name, timeout: 600_000}))
}

/**
 * client.py outside any sandbox, as the tester, inside a systemd scope named like an app's
 * (`app-flatpak-ID-N.scope`: any user can make one with systemd-run --user --scope).
 */
export async function inFakeScope(host: Host, args: string[], n: number): Promise<ClientAnswer> {
  return answer(await host.exec('systemd-run', ['--scope', '--quiet', `--unit=app-flatpak-${SANDBOX_APP}-${n}`, 'setpriv', `--reuid=${TESTER.uid}`, `--regid=${TESTER.uid}`, '--init-groups', '--', 'python3', `${DIR}/client.py`, ...args], {timeout: 120_000}))
}

/** Starts client.py in the sandbox in the background (as the tester); its answer goes to `out` in the guest. */
export async function startInSandbox(host: Host, args: string[], out: string): Promise<void> {
  await host.sh(`rm -f ${out}; cd / && setpriv --reuid=${TESTER.uid} --regid=${TESTER.uid} --init-groups -- env HOME=/home/${TESTER.name} sh -c "${sandboxCommand(args).replace(/"/g, '\\"')} > ${out} 2>&1" < /dev/null > /dev/null 2>&1 &`)
}

/** Waits for the answer (or `marker`) a background client.py writes to `out`. */
export async function waitForOutput(host: Host, out: string, marker = '"ok"', seconds = 120): Promise<string> {
  for (let i = 0; i < seconds * 4; i++) {
    const text = (await host.sh(`cat ${out} 2>/dev/null`)).stdout
    if (text.includes(marker)) return text
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`no ${marker} in ${out}: ${(await host.sh(`cat ${out}`)).stdout}`)
}

export function answerIn(text: string): ClientAnswer {
  return answer({stdout: text, stderr: '', exitCode: 0})
}

/** Runs client.py in the sandbox while a cancelling agent is registered for its xdg-dbus-proxy; the answer and what the agent was asked. */
export async function withCancellingAgent(host: Host, args: string[]): Promise<{answer: ClientAnswer; asked: string}> {
  await host.sh('rm -f /tmp/agent.out')
  await startInSandbox(host, ['delay', '6', ...args], '/tmp/client.out')
  let proxy = ''
  for (let i = 0; i < 80 && proxy === ''; i++) {
    await new Promise((r) => setTimeout(r, 250))
    proxy = (await host.sh(`pgrep -n -u ${TESTER.uid} xdg-dbus-proxy`)).stdout.trim()
  }
  if (proxy === '') throw new Error('no xdg-dbus-proxy of the sandbox appeared')
  await host.sh(`setpriv --reuid=${TESTER.uid} --regid=${TESTER.uid} --init-groups -- python3 ${DIR}/agent.py ${proxy} < /dev/null > /tmp/agent.out 2>&1 & echo $! > /tmp/agent.pid`)
  try {
    const out = await waitForOutput(host, '/tmp/client.out', '"ok"', 60)
    return {answer: answerIn(out), asked: (await host.sh('cat /tmp/agent.out')).stdout}
  } finally {
    await host.sh('kill $(cat /tmp/agent.pid)')
  }
}
