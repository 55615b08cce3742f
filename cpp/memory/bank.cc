#include "memory/bank.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "parallel.h"

namespace hm {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

MemoryBank::MemoryBank(const MemoryLayout& L, uint64_t seed) : L_(L), seed_(seed), bytes_(bank_data_bytes(L)) {}

MemoryBank::~MemoryBank() {
  if (mapped_) {
    munmap(mapped_, mapped_len_);
  } else {
    std::free(data_);
  }
}

void MemoryBank::bind(uint8_t* data) {
  data_ = data;
  const size_t n = (size_t)(L_.p + 1);
  weight_.assign(n, nullptr);
  m_.assign(n, nullptr);
  v_.assign(n, nullptr);
  steps_.assign(n, nullptr);
  init_.assign(n, nullptr);
  for (const auto& t : bank_tensors(L_)) {
    uint8_t* ptr = data + t.byte_offset;
    switch (t.kind) {
      case BankTensorKind::Weight: weight_[(size_t)t.level] = ptr; break;
      case BankTensorKind::AdamM: m_[(size_t)t.level] = ptr; break;
      case BankTensorKind::AdamV: v_[(size_t)t.level] = ptr; break;
      case BankTensorKind::Steps: steps_[(size_t)t.level] = reinterpret_cast<int32_t*>(ptr); break;
      case BankTensorKind::Initialized: init_[(size_t)t.level] = reinterpret_cast<int32_t*>(ptr); break;
    }
  }
}

std::unique_ptr<MemoryBank> MemoryBank::create_ram(const MemoryLayout& L, uint64_t seed, std::string* err) {
  std::unique_ptr<MemoryBank> b(new MemoryBank(L, seed));
  // calloc of a large size maps fresh zero pages: untouched blocks cost no resident memory.
  void* p = std::calloc((size_t)std::max<int64_t>(b->bytes_, 1), 1);
  if (!p) {
    *err = "cannot allocate " + std::to_string(b->bytes_) + " bytes for the memory bank";
    return nullptr;
  }
  b->bind(static_cast<uint8_t*>(p));
  return b;
}

std::unique_ptr<MemoryBank> MemoryBank::open_file(const MemoryLayout& L, uint64_t seed, const std::string& path,
                                                  int64_t data_start, bool writable, std::string* err) {
  std::unique_ptr<MemoryBank> b(new MemoryBank(L, seed));
  if (data_start < 8 || data_start % 4 != 0) {
    *err = path + ": data section offset " + std::to_string(data_start) + " is not 4-byte aligned";
    return nullptr;
  }
  int fd = ::open(path.c_str(), writable ? O_RDWR : O_RDONLY);
  if (fd < 0) {
    *err = errno_text(path.c_str());
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *err = errno_text(path.c_str());
    ::close(fd);
    return nullptr;
  }
  const int64_t need = data_start + b->bytes_;
  if ((int64_t)st.st_size != need) {
    *err = path + ": file has " + std::to_string((int64_t)st.st_size) + " bytes, the bank layout needs " + std::to_string(need);
    ::close(fd);
    return nullptr;
  }
  void* base = mmap(nullptr, (size_t)need, writable ? (PROT_READ | PROT_WRITE) : PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    *err = errno_text(("mmap " + path).c_str());
    return nullptr;
  }
  madvise(base, (size_t)need, MADV_RANDOM);  // blocks are fetched by path, not streamed
  b->mapped_ = base;
  b->mapped_len_ = (size_t)need;
  b->writable_ = writable;
  b->bind(static_cast<uint8_t*>(base) + data_start);
  return b;
}

float* MemoryBank::weight(int64_t l, int64_t node) const {
  uint8_t* p = weight_[(size_t)l];
  return p ? reinterpret_cast<float*>(p) + node * L_.block_floats(l) : nullptr;
}
float* MemoryBank::adam_m(int64_t l, int64_t node) const {
  uint8_t* p = m_[(size_t)l];
  return p ? reinterpret_cast<float*>(p) + node * L_.block_floats(l) : nullptr;
}
float* MemoryBank::adam_v(int64_t l, int64_t node) const {
  uint8_t* p = v_[(size_t)l];
  return p ? reinterpret_cast<float*>(p) + node * L_.block_floats(l) : nullptr;
}
int32_t* MemoryBank::steps(int64_t l) const { return steps_[(size_t)l]; }
int32_t* MemoryBank::initialized(int64_t l) const { return init_[(size_t)l]; }

void MemoryBank::init_values(int64_t l, int64_t node, float* dst) const {
  const int64_t rows = L_.rows(l), d = L_.d;
  const float stdv = (float)(1.0 / std::sqrt((double)d));
  uint64_t s = seed_ ^ (0x51ed270b27a8f3c9ULL * (uint64_t)(l + 1)) ^ (0x2545f4914f6cdd1dULL * (uint64_t)(node + 1));
  splitmix64(s);
  for (int64_t layer = 0; layer < L_.Lm; layer++) {
    float* blk = dst + layer * 3 * rows * d;
    for (int64_t i = 0; i < 2 * rows * d; i++) {  // gate and up rows: truncated normal at ±3σ
      double z;
      do {
        const double u1 = uniform01(s), u2 = uniform01(s);
        z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      } while (z < -3.0 || z > 3.0);
      blk[i] = (float)z * stdv;
    }
    std::memset(blk + 2 * rows * d, 0, sizeof(float) * rows * d);  // down rows: zero => no effect at init
  }
}

void MemoryBank::ensure_initialized(int64_t l, int64_t node) {
  int32_t* flag = init_[(size_t)l] + node;
  if (*flag) return;
  init_values(l, node, weight(l, node));
  *flag = 1;
}

GatherSources MemoryBank::prepare_gather(const std::vector<BlockId>& blocks) {
  const int64_t U = (int64_t)blocks.size();
  // File banks: ask for every block's pages at once before copying. The mapping is MADV_RANDOM
  // (no readahead), so without this a cold block is read one 4 KiB page fault at a time:
  // 8x slower per path in bench (tiers). No-op for RAM banks.
  for (const auto& b : blocks) prefetch(b.first, b.second);
  if (writable_) {
    parallel_for(U, [&](int64_t a, int64_t b) {
      for (int64_t u = a; u < b; u++) ensure_initialized(blocks[(size_t)u].first, blocks[(size_t)u].second);
    });
  }
  GatherSources g;
  g.weights.resize((size_t)U);
  std::vector<int64_t> missing;  // read-only bank, block never trained: its init values, generated
  for (int64_t u = 0; u < U; u++) {
    const int64_t l = blocks[(size_t)u].first, node = blocks[(size_t)u].second;
    if (initialized(l)[node]) g.weights[(size_t)u] = weight(l, node);
    else missing.push_back(u);
  }
  g.generated.resize(missing.size());
  parallel_for((int64_t)missing.size(), [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; i++) {
      const BlockId& blk = blocks[(size_t)missing[(size_t)i]];
      auto& buf = g.generated[(size_t)i];
      buf.resize((size_t)L_.block_floats(blk.first));
      init_values(blk.first, blk.second, buf.data());
    }
  });
  for (size_t i = 0; i < missing.size(); i++) g.weights[(size_t)missing[i]] = g.generated[i].data();
  return g;
}

void MemoryBank::prefetch(int64_t l, int64_t node) const {
  if (!mapped_) return;
  const long page = sysconf(_SC_PAGESIZE);
  uintptr_t a = reinterpret_cast<uintptr_t>(weight(l, node));
  uintptr_t e = a + (uintptr_t)(4 * L_.block_floats(l));
  a &= ~(uintptr_t)(page - 1);
  madvise(reinterpret_cast<void*>(a), e - a, MADV_WILLNEED);
}

bool MemoryBank::pin_levels(int64_t levels, std::string* err) {
  for (int64_t l = 0; l < std::min(levels, L_.p); l++) {
    if (!L_.has_level(l)) continue;
    // a read-only bank cannot be written: its untrained blocks are generated at fetch time instead
    if (writable_)
      for (int64_t n = 0; n < L_.nodes(l); n++) ensure_initialized(l, n);
    if (mlock(weight(l, 0), (size_t)(4 * L_.nodes(l) * L_.block_floats(l))) != 0) {
      *err = errno_text("mlock");
      return false;
    }
  }
  return true;
}

bool MemoryBank::flush(std::string* err) {
  if (!mapped_ || !writable_) return true;
  if (msync(mapped_, mapped_len_, MS_SYNC) != 0) {
    *err = errno_text("msync");
    return false;
  }
  return true;
}

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21  // Linux 5.4; older kernels answer EINVAL and the call reports it
#endif

bool MemoryBank::release_page_cache(std::string* err) {
  if (!mapped_) return true;
  if (writable_ && msync(mapped_, mapped_len_, MS_SYNC) != 0) {
    *err = errno_text("msync");
    return false;
  }
  if (madvise(mapped_, mapped_len_, MADV_PAGEOUT) != 0) {
    *err = errno_text("madvise(MADV_PAGEOUT)");
    return false;
  }
  return true;
}

int64_t MemoryBank::resident_bytes() const {
  if (!mapped_) return bytes_;
  const long page = sysconf(_SC_PAGESIZE);
  const size_t pages = (mapped_len_ + (size_t)page - 1) / (size_t)page;
  std::vector<unsigned char> vec(pages);
  if (mincore(mapped_, mapped_len_, vec.data()) != 0) return -1;
  int64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n * page;
}

bool MemoryBank::write_to_fd(int fd, int64_t offset, std::string* err) const {
  int64_t done = 0;
  while (done < bytes_) {
    const size_t chunk = (size_t)std::min<int64_t>(bytes_ - done, 1 << 26);
    ssize_t w = pwrite(fd, data_ + done, chunk, (off_t)(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      *err = errno_text("write");
      return false;
    }
    done += w;
  }
  return true;
}

bool MemoryBank::read_from_fd(int fd, int64_t offset, std::string* err) {
  int64_t done = 0;
  while (done < bytes_) {
    const size_t chunk = (size_t)std::min<int64_t>(bytes_ - done, 1 << 26);
    ssize_t r = pread(fd, data_ + done, chunk, (off_t)(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno_text("read");
      return false;
    }
    if (r == 0) {
      *err = "file is shorter than the bank layout";
      return false;
    }
    done += r;
  }
  return true;
}

}  // namespace hm
