/**
 * hiermem's public API. Everything a user needs is re-exported here; deeper paths are internal.
 */
export { HiermemError, type HiermemErrorCode } from './errors.js';
export { loadNative } from './native.js';
export {
  resolveBackend, detectGpu, nvidiaDriverPresent, cudaLibraryPath, BACKEND_ENV, CUDA_LIB_ENV,
  type Backend, type ResolvedBackend, type GpuInfo,
} from './backend/detect.js';
export {
  CpuAnchorRunner, CudaAnchorRunner, createAnchorRunner, type AnchorRunner, type BackendRunner, type RunnerOptions,
  type CudaRunnerOptions,
} from './backend/index.js';
export { CudaAnchorModel, type CudaModelOptions, type GemmPrecision } from './model/cuda-anchor.js';
export { CudaAdamW } from './train/cuda-adamw.js';
export { AnchorModel, type Batch, type CreateModelOptions, type TokenDecoder } from './model/anchor.js';
export { type ModelConfig, MODEL_PRESETS, resolveModelConfig, anchorParamCount, trainFlopsPerToken } from './model/config.js';
export { generate, sampleToken, type GenerateOptions, type NextTokenLogits } from './model/generate.js';
export { ByteTokenizer, tokenizerFromJSON, type Tokenizer } from './data/tokenizer.js';
export { loadSampleCorpus, readTextDocuments, readJsonlDocuments } from './data/corpus.js';
export { WindowSampler } from './data/windows.js';
export { packByLeaf, packLeaf, PathBatchSampler, type PackedSequence } from './data/packing.js';
export { buildDemoCorpus, loadFacts, type DemoCorpus, type FactProbe } from './data/facts.js';
export { AdamW, type AdamWOptions } from './train/adamw.js';
export { cosineLr } from './train/schedule.js';
export { saveCheckpoint, loadCheckpoint, type TrainerState } from './train/checkpoint.js';
export {
  train, trainLoop, anchorStepper, DEFAULT_BACKEND, type GradientReducer, type TrainOptions, type TrainHistory, type ProgressEvent, type Stepper,
  type StepperBackendOptions,
} from './train/trainer.js';
export { memoryStepper, saveHierarchicalCheckpoint, loadHierarchicalCheckpoint, type MemoryTrainMode } from './train/memory-trainer.js';
export { resolveMemorySpec, memorySizes, type MemorySpec, type ResolvedMemorySpec, type MemorySizes } from './memory/spec.js';
export { MemoryBank, type BankOptions } from './memory/bank.js';
export {
  HierarchicalModel, slotsOf, cpuAnchorRunner, GENERIC_PATH, NO_MEMORY_PATH, type PathBatch,
} from './memory/memory-model.js';
export * from './retrieval/index.js';
export { scoreProbes, readProbes, extractAnswer, type Probe, type ProbeResult } from './eval/probes.js';
export { runDemo, DEMO_PLANS, type DemoResults } from './eval/demo.js';
export { readSafetensors, readSafetensorsHeader, writeSafetensors } from './io/safetensors.js';
export {
  LocalCommunicator, launcherWorldSize, type Communicator, type CommStats, type DistMode,
} from './dist/communicator.js';
export { MpiCommunicator, MPI_LIB_ENV, DIST_TIMEOUT_ENV, type MpiOptions } from './dist/mpi.js';
export { createCommunicator, gradientReducer, rankSeed, rankZeroSaves } from './dist/data-parallel.js';
export {
  prepareRun, resolveCheckpointPath, type RunOptions, type PreparedRun, type RunData, type AnchorStart, type MemoryRunOptions,
} from './train/run.js';
export { HfTokenizer, loadHfTokenizer } from './data/hf-tokenizer.js';
export { trainByteLevelBpe, type TrainTokenizerOptions, type TrainedTokenizer } from './data/hf-tokenizer-train.js';
export { loadHfModel, isHfModelDir, type LoadHfOptions, type LoadedHfModel } from './io/hf-import.js';
export { exportHf, type HfExportInput, type HfExportSummary } from './io/hf-export.js';
export { modelConfigFromHf, hfConfigFromModel } from './io/hf-config.js';
export { limitVocab } from './train/limit-vocab.js';
export {
  evaluatePerplexity, readPerplexityDocuments, anchorPerplexityModel, memoryPerplexityModel,
  type PerplexityDocument, type PerplexityResult, type PerplexityOptions, type PerplexityStats,
} from './eval/perplexity.js';
export { prepareData, type PrepareOptions, type PrepareSummary } from './data/prepare.js';
export { PreparedData } from './data/prepared.js';
