export { type AdamHyper, type Backend, type BackendName, checkGemm, type SgdHyper } from './backend.js';
export { type BackendChoice, createBackend, type CreatedBackend, NATIVE_HINT } from './backends/create-backend.js';
export { loadNativeAddon, NativeBackend } from './backends/native-backend.js';
export { ReferenceBackend } from './backends/reference-backend.js';
export { DEFAULT_WASM_MEMORY_MB, WasmBackend, type WasmBackendOptions } from './backends/wasm-backend.js';
export { CoreError, type CoreErrorCode } from './errors.js';
export { type Initializer, INITIALIZERS, initialize, initializerVariance } from './initializers.js';
export type { Layer } from './layers/layer.js';
export { createLoss, type Loss, MeanSquaredError, SoftmaxCrossEntropy, type Targets } from './losses.js';
export { type BatchResult, Model, type ModelOptions } from './model.js';
export { activationFloatsPerSample, describeModel, expandShortForms, type GptShortForm, gptShortFormSchema, gptSpec, layerOutputShape, layerWidths, type LayerSpec, LOSSES, type LossName, mlpSpec, MODEL_LIMITS, type ModelSpec, modelSpecSchema, outputSize, parameterCount, parseModelSpec, positionsOf, type ShapedLayer, shapeLayers, vocabularyOf, withVocabulary } from './model-spec.js';
export { addBiasRows, allFinite, argmaxRow, firstNonFinite, scale, sumRows, sumSquares } from './ops.js';
export {
  clipGradNorm,
  createOptimizer,
  type Optimizer,
  type OptimizerConfig,
  optimizerConfigSchema,
  type OptimizerState,
  parseOptimizerConfig,
} from './optimizers.js';
export { type ParameterCounts, type ParameterDecl, type ParameterRole, ParameterStore, type TensorInfo } from './parameter-store.js';
export { Rng, type RngState } from './rng.js';
export { learningRate, parseScheduleConfig, type ScheduleConfig, scheduleConfigSchema } from './schedules.js';
export { shapeSize } from './shape.js';
export { closest, describeIssues, type SchemaVocabulary, schemaVocabulary } from './validation.js';
export { dequantizeRows, fromFloat16, packInt4, type QuantizedRows, quantizeRows, toFloat16, unpackInt4 } from './quantize.js';
export { type GenerateOptions, generateTokens, MAX_TEMPERATURE } from './generate.js';
export { absMax, fixedPointHalves, fixedPointMean } from './fixed-point.js';
