/** The capture engine's public surface for the CLI. */
export {type CaptureRequest, type CaptureResult, captureBus, renderCaptureSummary} from './request.js'
