// layout.h — the memory tree's shapes (paper §2.3, §3.4) and the bank's tensor layout.
// Level l (0-based here; the paper's level l+1) has k^(l+1) nodes; each node owns one block of
// r[l] hidden units for each of the Lm memory layers: per layer a gate row, an up row and a down
// row of length d, stored [Lm][3][r_l][d] so a fetch is one contiguous read per level.
// A fetched slot (one path) is [Lm][3][R][d] with R = sum r, level l's rows at row_offset(l).
// The optional generic memory (paper §4.5) is one extra block of R units, addressed as level p.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace hm {

struct MemoryLayout {
  int64_t k = 0, p = 0, Lm = 0, d = 0;
  std::vector<int64_t> r;  // p entries
  bool generic = false;
  bool optimizer = false;  // bank carries AdamW m, v and per-block step counts

  int64_t R() const;
  int64_t row_offset(int64_t l) const;     // l in [0, p]; the generic level p starts at row 0
  int64_t rows(int64_t l) const;           // r[l], or R for the generic level p
  int64_t nodes(int64_t l) const;          // k^(l+1), or 1 for the generic level p
  int64_t block_floats(int64_t l) const { return Lm * 3 * rows(l) * d; }
  int64_t slot_floats() const { return Lm * 3 * R() * d; }
  bool has_level(int64_t l) const { return l < p ? r[(size_t)l] > 0 : generic; }
  int64_t num_levels() const { return p + (generic ? 1 : 0); }  // levels that may hold blocks
};

enum class BankTensorKind { Weight, AdamM, AdamV, Steps, Initialized };

struct BankTensor {
  std::string name;
  BankTensorKind kind;
  int64_t level;               // 0..p (p = generic)
  std::vector<int64_t> shape;  // F32 [nodes, Lm, 3, rows, d] or I32 [nodes]
  bool is_f32;
  int64_t byte_offset, byte_size;  // within the data section
};

// The bank file's tensors in data-section order: weights, then (if optimizer) m, v, steps, then
// the per-block "initialized" flags (blocks are initialised lazily on first fetch).
std::vector<BankTensor> bank_tensors(const MemoryLayout& L);
int64_t bank_data_bytes(const MemoryLayout& L);

}  // namespace hm
