/** The architecture as a test (`npm run check:deps`, part of `npm test`). Each rule says why. */
const area = (name) => `^src/${name}/`
module.exports = {
  forbidden: [
    {name: 'no-cycles', severity: 'error', comment: 'Modules form layers; a cycle means two of them are one.', from: {}, to: {circular: true}},
    {
      name: 'model-not-doing',
      severity: 'error',
      comment: 'The extension model and the parsers are pure judgement: they never reach the host-changing lifecycle, the services, the capture engine or the CLI.',
      from: {path: '^src/(sysext|formats)/'},
      to: {path: '^src/(lifecycle|helper|capture|commands|cli)/'},
    },
    {
      name: 'formats-stand-alone',
      severity: 'error',
      comment: 'Parsers of outside formats depend on nothing of ours but the error type.',
      from: {path: area('formats')},
      to: {path: '^src/', pathNot: ['^src/formats/', '^src/errors\\.ts$']},
    },
    {
      name: 'adapters-know-no-model',
      severity: 'error',
      comment: 'One adapter per outside system (systemd, dbus, polkit, flatpak, exec): they know their system, not what we do with it.',
      from: {path: '^src/(systemd|dbus|polkit|flatpak)/|^src/exec\\.ts$'},
      to: {path: '^src/(sysext|lifecycle|capture|helper|commands|cli)/'},
    },
    {
      name: 'lifecycle-below-cli',
      severity: 'error',
      comment: 'The lifecycle emits events; it never renders, and it does not run the privileged services or the capture engine.',
      from: {path: area('lifecycle')},
      to: {path: '^src/(commands|cli|helper|capture)/'},
    },
    {
      name: 'capture-stands-alone',
      severity: 'error',
      comment: 'The capture engine knows the bus, not extensions or their lifecycle.',
      from: {path: area('capture')},
      to: {path: '^src/(sysext|lifecycle|commands|cli)/'},
    },
    {
      name: 'services-not-cli',
      severity: 'error',
      comment: 'The privileged services run without the CLI and its model of extensions: the install service (manager.ts) runs the CLI as a child (cli-run.ts), so install has one implementation.',
      from: {path: area('helper')},
      to: {path: '^src/(commands|cli|sysext|lifecycle)/'},
    },
    {
      name: 'commands-use-public-entries',
      severity: 'error',
      comment: "Commands are thin: they import the CLI helpers and each area's public entry (index.ts), nothing inside an area.",
      from: {path: area('commands')},
      to: {path: '^src/', pathNot: ['^src/cli/', '^src/errors\\.ts$', '^src/[a-z-]+/index\\.ts$']},
    },
    {
      name: 'cli-uses-public-entries',
      severity: 'error',
      comment: "The CLI's rendering sees results through each area's public entry.",
      from: {path: area('cli')},
      to: {path: '^src/', pathNot: ['^src/cli/', '^src/errors\\.ts$', '^src/[a-z-]+/index\\.ts$']},
    },
    {
      name: 'src-not-tests',
      severity: 'error',
      comment: 'Shipped code never depends on tests, benches or build scripts.',
      from: {path: '^src/'},
      to: {path: '^(test|bench|scripts)/'},
    },
    {name: 'no-unresolvable', severity: 'error', comment: 'Every import resolves.', from: {}, to: {couldNotResolve: true}},
  ],
  options: {
    doNotFollow: {path: 'node_modules'},
    tsConfig: {fileName: 'tsconfig.json'},
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.d.ts', '.js']},
  },
}
