/** The extension model's public surface: what commands and the lifecycle use. */
export type {Finding, Severity} from './findings.js'
export {loadHost} from './host.js'
export {planRelease, type WriteResult, writeRelease, writeReleaseCopy} from './release-writer.js'
export {allRules} from './rules/index.js'
export {scanTree} from './tree.js'
export {extensionName, type ValidationReport, validate} from './validate.js'
export {EXTRAS, type Extra, isExtra} from './rules/confinement.js'
