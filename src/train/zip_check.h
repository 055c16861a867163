// Integrity check of a zip archive (the container of LibTorch checkpoints)
// before LibTorch parses it.
#pragma once

#include <string>

namespace qat {

// Throws std::runtime_error starting with `path` unless the file is a
// complete zip archive whose every stored entry matches its CRC-32.
//
// LibTorch's reader checks no CRCs, and its TorchScript parser, which
// compiles the archive's code/ entries on load, dereferences wild pointers
// on some damaged sources (found by fuzz/checkpoint_fuzzer). Checking the
// CRCs first turns any damage to a written file (bit rot, a partial copy)
// into a named error; only a deliberately crafted file still reaches it.
void check_zip_integrity(const std::string& path);

}  // namespace qat
