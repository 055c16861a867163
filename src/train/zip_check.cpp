// A minimal zip reader: the end-of-central-directory records (zip64
// included, which LibTorch always writes), the central directory, each
// entry's local header and its data's CRC-32. LibTorch stores tensor data
// as is and deflates its TorchScript code; other methods are refused.
#include "zip_check.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

namespace qat {
namespace {

constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kDirectoryEntry = 0x02014b50;
constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr size_t kEndOfDirectorySize = 22;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kDirectoryEntrySize = 46;

// Little-endian fields at checked offsets of the file's bytes.
class Bytes {
 public:
  Bytes(std::vector<uint8_t> data, const std::string& path) : data_(std::move(data)), path_(path) {}
  size_t size() const { return data_.size(); }
  const uint8_t* at(uint64_t offset, uint64_t length) const {
    if (offset > data_.size() || length > data_.size() - offset) fail("truncated zip archive");
    return data_.data() + offset;
  }
  uint64_t read(uint64_t offset, int bytes) const {
    const uint8_t* p = at(offset, static_cast<uint64_t>(bytes));
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = value << 8 | p[i];
    return value;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(path_ + ": corrupt or truncated checkpoint (" + what + ")");
  }

 private:
  std::vector<uint8_t> data_;
  std::string path_;
};

// Where the central directory starts and how many entries it holds.
std::pair<uint64_t, uint64_t> find_directory(const Bytes& b) {
  if (b.size() < kEndOfDirectorySize) b.fail("too short for a zip archive");
  // The record ends the file unless a comment (at most 64 KiB) follows it.
  const uint64_t last = b.size() - kEndOfDirectorySize;
  const uint64_t first = last > 0xffff ? last - 0xffff : 0;
  uint64_t end = last + 1;
  for (uint64_t at = last + 1; at-- > first;) {
    if (b.read(at, 4) == kEndOfDirectory) {
      end = at;
      break;
    }
  }
  if (end > last) b.fail("no end-of-central-directory record");
  uint64_t entries = b.read(end + 10, 2);
  uint64_t offset = b.read(end + 16, 4);
  if (entries == 0xffff || offset == 0xffffffff) {
    if (end < 20 || b.read(end - 20, 4) != kZip64Locator) b.fail("zip64 locator missing");
    const uint64_t zip64_end = b.read(end - 12, 8);
    if (b.read(zip64_end, 4) != kZip64EndOfDirectory) b.fail("zip64 end-of-central-directory record missing");
    entries = b.read(zip64_end + 32, 8);
    offset = b.read(zip64_end + 48, 8);
  }
  return {offset, entries};
}

// zlib's crc32 takes a 32-bit length: fed in chunks.
uint32_t crc_of(const uint8_t* data, uint64_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (uint64_t done = 0; done < size;) {
    const uint64_t chunk = std::min<uint64_t>(size - done, 1u << 30);
    crc = crc32(crc, data + done, static_cast<uInt>(chunk));
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

// A raw deflate stream that must expand to exactly `uncompressed` bytes.
// Deflated entries are LibTorch's code files, a few KiB each: the sizes
// are capped so that a damaged header cannot ask for gigabytes.
std::vector<uint8_t> inflate_entry(const Bytes& b, uint64_t data, uint64_t size, uint64_t uncompressed,
                                   const std::string& name) {
  constexpr uint64_t kMaxInflated = uint64_t{1} << 28;
  if (size > kMaxInflated || uncompressed > kMaxInflated) b.fail("entry '" + name + "' is implausibly large");
  const uint8_t* input = b.at(data, size);  // may throw: before zlib allocates
  std::vector<uint8_t> out(uncompressed + 1);  // one spare byte detects excess output
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) b.fail("zlib cannot start inflating");
  z.next_in = const_cast<Bytef*>(input);
  z.avail_in = static_cast<uInt>(size);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  const uint64_t produced = z.total_out;
  inflateEnd(&z);
  if (rc != Z_STREAM_END || produced != uncompressed) b.fail("entry '" + name + "' does not inflate");
  out.resize(produced);
  return out;
}

}  // namespace

void check_zip_integrity(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open checkpoint");
  const Bytes b(std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}), path);
  auto [at, entries] = find_directory(b);
  for (uint64_t i = 0; i < entries; ++i) {
    if (b.read(at, 4) != kDirectoryEntry) b.fail("central directory entry " + std::to_string(i) + " is damaged");
    const uint64_t method = b.read(at + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(b.read(at + 16, 4));
    uint64_t size = b.read(at + 20, 4);
    uint64_t uncompressed = b.read(at + 24, 4);
    const uint64_t name_length = b.read(at + 28, 2), extra_length = b.read(at + 30, 2);
    const uint64_t comment_length = b.read(at + 32, 2);
    uint64_t local = b.read(at + 42, 4);
    const std::string name(reinterpret_cast<const char*>(b.at(at + kDirectoryEntrySize, name_length)), name_length);
    // Zip64 extra field (id 1): 64-bit values for whichever fields are
    // 0xffffffff above, in the order uncompressed size, size, offset.
    const uint64_t extra_end = at + kDirectoryEntrySize + name_length + extra_length;
    for (uint64_t e = at + kDirectoryEntrySize + name_length; e + 4 <= extra_end;) {
      const uint64_t id = b.read(e, 2), length = b.read(e + 2, 2);
      if (id == 1) {
        uint64_t field = e + 4;
        if (uncompressed == 0xffffffff) {
          uncompressed = b.read(field, 8);
          field += 8;
        }
        if (size == 0xffffffff) {
          size = b.read(field, 8);
          field += 8;
        }
        if (local == 0xffffffff) local = b.read(field, 8);
      }
      e += 4 + length;
    }
    if (b.read(local, 4) != kLocalHeader) b.fail("local header of entry '" + name + "' is damaged");
    const uint64_t data = local + kLocalHeaderSize + b.read(local + 26, 2) + b.read(local + 28, 2);
    uint32_t actual = 0;
    if (method == 0) {
      actual = crc_of(b.at(data, size), size);
    } else if (method == 8) {
      const std::vector<uint8_t> inflated = inflate_entry(b, data, size, uncompressed, name);
      actual = crc_of(inflated.data(), inflated.size());
    } else {
      b.fail("entry '" + name + "' uses compression method " + std::to_string(method));
    }
    if (actual != crc) b.fail("entry '" + name + "' fails its CRC-32 check");
    at += kDirectoryEntrySize + name_length + extra_length + comment_length;
  }
}

}  // namespace qat
