/** The retriever: pluggable embedders, balanced hierarchical k-means, path assignment. */
export {
  embedderFromJSON,
  isEmbedderJSON,
  registerEmbedder,
  type Embedder,
  type EmbedderFactory,
  type EmbedderJSON,
  type EmbedderLoadOptions,
  type EmbedderTensor,
} from './embedder.js';
export { DEFAULT_DIM, HASHED_TFIDF_TYPE, HashedTfidfEmbedder, wordsOf, type HashedTfidfJSON, type HashedTfidfOptions } from './hashed-tfidf.js';
export {
  ONNX_EMBEDDER_TYPE,
  OnnxEmbedder,
  loadOnnxRuntime,
  onnxRuntimeAvailable,
  type OnnxEmbedderJSON,
  type OnnxEmbedderOptions,
} from './onnx-embedder.js';
export { WordPieceTokenizer, type WordPieceOptions } from './wordpiece.js';
export { nearestCentroid, sphericalKMeans, type KMeansOptions } from './kmeans.js';
export {
  MAX_LEAVES,
  RetrievalTree,
  type AssignOptions,
  TREE_FORMAT,
  TREE_VERSION,
  type FitResult,
  type FitTextsOptions,
  type TreeFitOptions,
  type TreeLoadOptions,
  type TreeSpec,
} from './tree.js';
export { clusterCorpus, DEFAULT_CLUSTER_SAMPLE, type ClusterCorpusOptions, type ClusterProgress, type ClusterSummary } from './cluster-corpus.js';
export { RoutePool } from './route-pool.js';
