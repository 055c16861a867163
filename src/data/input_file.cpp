#include "input_file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace qat::data {
namespace {

// zlib's internal buffer; the default 8 KiB makes decompression markedly
// slower on tens of megabytes.
constexpr unsigned kZlibBuffer = 1u << 17;
constexpr size_t kFirstChunk = size_t{1} << 20;

// Closes the gzFile on every path out of read_file.
struct GzCloser {
  gzFile file;
  ~GzCloser() { gzclose(file); }
};

// zlib's messages start with "<path>: "; ours already do.
std::string without_path_prefix(const std::string& message, const std::string& path) {
  const std::string prefix = path + ": ";
  return message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size()) : message;
}

}  // namespace

std::string FileContent::size_text() const {
  return std::to_string(bytes.size()) + (gzip ? " bytes after decompression" : " bytes");
}

void fail(const std::string& path, const std::string& what) { throw std::runtime_error(path + ": " + what); }

FileContent read_file(const std::string& path) {
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    fail(path, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "out of memory"));
  }
  const GzCloser closer{file};
  gzbuffer(file, kZlibBuffer);

  FileContent content{path, {}, false};
  // The decompressed size is unknown up front: grow geometrically and read
  // into the tail. gzread takes an unsigned count, hence the chunk cap.
  size_t used = 0;
  content.bytes.resize(kFirstChunk);
  for (;;) {
    if (used == content.bytes.size()) content.bytes.resize(2 * used);
    const size_t room = std::min<size_t>(content.bytes.size() - used, 1u << 30);
    const int got = gzread(file, content.bytes.data() + used, static_cast<unsigned>(room));
    if (got < 0) break;
    used += static_cast<size_t>(got);
    if (got == 0) break;
  }
  int errnum = Z_OK;
  const std::string reason = without_path_prefix(gzerror(file, &errnum), path);
  if (errnum == Z_ERRNO) fail(path, "read error: " + reason);
  if (errnum != Z_OK) fail(path, "corrupt gzip data: " + reason);
  content.bytes.resize(used);
  content.gzip = gzdirect(file) == 0;
  return content;
}

}  // namespace qat::data
