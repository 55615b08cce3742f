// bank.h — storage of the memory bank: one byte range laid out as bank_tensors() says, either a
// zeroed RAM allocation or a memory-mapped safetensors file (MAP_SHARED: the file may be far
// larger than RAM; only touched pages become resident). Blocks are initialised lazily and
// deterministically on first fetch (gate/up truncated normal std 1/sqrt(d) from a counter-based
// RNG keyed by (seed, level, node); down rows zero), so creating a bank of any size is O(1) and a
// RAM bank and a file bank of the same seed hold bit-identical values. The lazy initialisation
// lives here (prepare_gather), not in the gather kernels: the CPU kernel and its CUDA twin only copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "memory/layout.h"

namespace hm {

using BlockId = std::pair<int64_t, int64_t>;  // (level, node); level p = the generic block

// Where a gather copies each block from: weights[u] holds block u's [Lm][3][rows][d] values.
struct GatherSources {
  std::vector<const float*> weights;
  std::vector<std::vector<float>> generated;  // init values of never-trained blocks of a read-only bank
};

class MemoryBank {
 public:
  static std::unique_ptr<MemoryBank> create_ram(const MemoryLayout& L, uint64_t seed, std::string* err);
  // Maps `path`; the data section (bank_data_bytes) starts at byte `data_start` (a multiple of 4).
  static std::unique_ptr<MemoryBank> open_file(const MemoryLayout& L, uint64_t seed, const std::string& path,
                                               int64_t data_start, bool writable, std::string* err);
  ~MemoryBank();
  MemoryBank(const MemoryBank&) = delete;
  MemoryBank& operator=(const MemoryBank&) = delete;

  const MemoryLayout& layout() const { return L_; }
  bool writable() const { return writable_; }
  bool is_file() const { return mapped_ != nullptr; }
  uint64_t seed() const { return seed_; }

  // Pointers to block (l, node) of each tensor kind (nullptr where absent).
  float* weight(int64_t l, int64_t node) const;
  float* adam_m(int64_t l, int64_t node) const;
  float* adam_v(int64_t l, int64_t node) const;
  int32_t* steps(int64_t l) const;
  int32_t* initialized(int64_t l) const;

  // Writes the init values of block (l, node) ([Lm][3][rows][d]) into dst.
  void init_values(int64_t l, int64_t node, float* dst) const;
  // Initialises the block in place if it was never initialised (needs a writable bank).
  void ensure_initialized(int64_t l, int64_t node);
  // Readies `blocks` (sorted unique, as memory_unique_blocks gives them) for a gather: pages them
  // in (file banks), initialises never-touched ones in place (writable banks) or generates their
  // init values into `generated` (read-only banks: the file must not change). Same values either
  // way, whichever threads run it. Called before every gather, whichever backend copies.
  GatherSources prepare_gather(const std::vector<BlockId>& blocks);

  // Hints the OS to page in these blocks (file banks; a no-op in RAM).
  void prefetch(int64_t l, int64_t node) const;
  // Pins [0, levels) resident (mlock, best effort) — the shallow levels every batch fetches.
  bool pin_levels(int64_t levels, std::string* err);
  // Flushes a file bank to disk (msync); returns false with err on failure.
  bool flush(std::string* err);
  // File banks: writes dirty pages back and asks the kernel to drop the file's pages from the page
  // cache (MADV_PAGEOUT), so the next fetches read from disk — a bank larger than RAM behaves so.
  bool release_page_cache(std::string* err);
  // Bytes of the mapping resident in the page cache (mincore); the whole bank for RAM banks.
  int64_t resident_bytes() const;
  // Copies the whole data section to / from a file descriptor at `offset` (RAM bank save/load).
  bool write_to_fd(int fd, int64_t offset, std::string* err) const;
  bool read_from_fd(int fd, int64_t offset, std::string* err);
  // Bytes of the data section.
  int64_t bytes() const { return bytes_; }

 private:
  MemoryBank(const MemoryLayout& L, uint64_t seed);
  void bind(uint8_t* data);

  MemoryLayout L_;
  uint64_t seed_;
  int64_t bytes_ = 0;
  uint8_t* data_ = nullptr;
  void* mapped_ = nullptr;  // mmap base when file-backed
  size_t mapped_len_ = 0;
  bool writable_ = true;
  std::vector<uint8_t*> weight_, m_, v_;  // per level (p + 1)
  std::vector<int32_t*> steps_, init_;
};

}  // namespace hm
