// Whole-file reads for the dataset readers, through zlib so that gzip and
// plain files read the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qat::data {

struct FileContent {
  std::string path;
  std::vector<uint8_t> bytes;  // decompressed
  bool gzip = false;

  // "N bytes", or "N bytes after decompression": sizes in error messages
  // must not be mistaken for what `ls` shows of a .gz file.
  std::string size_text() const;
};

// Throws std::runtime_error("<path>: cannot open: <reason>") for a missing or
// unreadable file and "<path>: corrupt gzip data: <reason>" for a damaged
// or cut-off gzip stream.
FileContent read_file(const std::string& path);

// Throws std::runtime_error("<path>: <what>").
[[noreturn]] void fail(const std::string& path, const std::string& what);

}  // namespace qat::data
