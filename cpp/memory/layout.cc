#include "memory/layout.h"

namespace hm {

int64_t MemoryLayout::R() const {
  int64_t s = 0;
  for (int64_t x : r) s += x;
  return s;
}
int64_t MemoryLayout::row_offset(int64_t l) const {
  if (l >= p) return l == p ? 0 : R();
  int64_t s = 0;
  for (int64_t j = 0; j < l; j++) s += r[(size_t)j];
  return s;
}
int64_t MemoryLayout::rows(int64_t l) const { return l < p ? r[(size_t)l] : R(); }
int64_t MemoryLayout::nodes(int64_t l) const {
  if (l >= p) return 1;
  int64_t n = 1;
  for (int64_t j = 0; j <= l; j++) n *= k;
  return n;
}

std::vector<BankTensor> bank_tensors(const MemoryLayout& L) {
  std::vector<BankTensor> out;
  int64_t off = 0;
  auto name_of = [&](int64_t l) { return l < L.p ? "memory.level" + std::to_string(l + 1) : std::string("memory.generic"); };
  auto add_f32 = [&](int64_t l, BankTensorKind kind, const char* suffix) {
    BankTensor t{name_of(l) + suffix, kind, l, {L.nodes(l), L.Lm, 3, L.rows(l), L.d}, true, off, 0};
    t.byte_size = 4 * L.nodes(l) * L.block_floats(l);
    off += t.byte_size;
    out.push_back(t);
  };
  auto add_i32 = [&](int64_t l, BankTensorKind kind, const char* suffix) {
    BankTensor t{name_of(l) + suffix, kind, l, {L.nodes(l)}, false, off, 4 * L.nodes(l)};
    off += t.byte_size;
    out.push_back(t);
  };
  const int64_t levels = L.p + 1;
  for (int64_t l = 0; l < levels; l++)
    if (L.has_level(l)) add_f32(l, BankTensorKind::Weight, ".weight");
  if (L.optimizer) {
    for (int64_t l = 0; l < levels; l++)
      if (L.has_level(l)) add_f32(l, BankTensorKind::AdamM, ".adam_m");
    for (int64_t l = 0; l < levels; l++)
      if (L.has_level(l)) add_f32(l, BankTensorKind::AdamV, ".adam_v");
    for (int64_t l = 0; l < levels; l++)
      if (L.has_level(l)) add_i32(l, BankTensorKind::Steps, ".steps");
  }
  for (int64_t l = 0; l < levels; l++)
    if (L.has_level(l)) add_i32(l, BankTensorKind::Initialized, ".initialized");
  return out;
}

int64_t bank_data_bytes(const MemoryLayout& L) {
  auto t = bank_tensors(L);
  return t.empty() ? 0 : t.back().byte_offset + t.back().byte_size;
}

}  // namespace hm
