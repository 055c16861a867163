// QuantizeLinear / DequantizeLinear against the ONNX backend node test data
// (Debian package libonnx-testdata): every data/node/test_quantizelinear* and
// test_dequantizelinear* case is mapped onto a qat::Encoding and run through
// qat::quantize / qat::dequantize; the result must equal the stored output
// exactly. (The dynamicquantizelinear cases compute their own range and are
// not QDQ with a given encoding, so they are not part of this suite.)
//
// $QAT_ONNX_TESTDATA overrides the data directory.
#include "qat/fake_quant.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace qat {
namespace {

namespace fs = std::filesystem;
using torch::Tensor;

constexpr const char* kDefaultDataDir = "/usr/share/libonnx-testdata/data/node";

fs::path data_dir() {
  if (const char* env = std::getenv("QAT_ONNX_TESTDATA")) return env;
  return kDefaultDataDir;
}

// A case the suite does not cover (an element type qat has no grid for, an
// attribute it does not model); reported and counted, never silently dropped.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename Message>
void parse_file(const fs::path& path, Message* message) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!message->ParseFromString(bytes.str())) throw std::runtime_error("cannot parse " + path.string());
}

const char* type_name(int32_t data_type) {
  switch (data_type) {
    case onnx::TensorProto_DataType_FLOAT: return "float";
    case onnx::TensorProto_DataType_UINT8: return "uint8";
    case onnx::TensorProto_DataType_INT8: return "int8";
    case onnx::TensorProto_DataType_UINT16: return "uint16";
    case onnx::TensorProto_DataType_INT16: return "int16";
    case onnx::TensorProto_DataType_INT32: return "int32";
    default: return "unsupported";
  }
}

torch::ScalarType scalar_type_of(int32_t data_type) {
  switch (data_type) {
    case onnx::TensorProto_DataType_FLOAT: return torch::kFloat;
    case onnx::TensorProto_DataType_UINT8: return torch::kByte;
    case onnx::TensorProto_DataType_INT8: return torch::kChar;
    case onnx::TensorProto_DataType_INT16: return torch::kShort;
    case onnx::TensorProto_DataType_INT32: return torch::kInt;
    // LibTorch has no uint16 tensors worth relying on; widen to int32 and
    // compare values.
    case onnx::TensorProto_DataType_UINT16: return torch::kInt;
    default:
      throw Unsupported("tensor element type " + std::to_string(data_type) +
                        " (onnx::TensorProto::DataType) is not handled");
  }
}

// TensorProto -> tensor: raw_data (little-endian, packed) or the typed
// repeated field the ONNX spec assigns to the element type (float_data for
// float; int32_data for every integer type up to 32 bits).
Tensor to_tensor(const onnx::TensorProto& proto) {
  const int32_t type = proto.data_type();
  const torch::ScalarType scalar_type = scalar_type_of(type);
  const std::vector<int64_t> shape(proto.dims().begin(), proto.dims().end());
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (proto.has_data_location() && proto.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    throw Unsupported("tensor '" + proto.name() + "' stores its data externally");
  }

  if (!proto.raw_data().empty()) {
    const std::string& raw = proto.raw_data();
    Tensor t;
    if (type == onnx::TensorProto_DataType_UINT16) {
      std::vector<uint16_t> values(static_cast<size_t>(numel));
      if (raw.size() != values.size() * sizeof(uint16_t)) throw std::runtime_error("raw_data size mismatch");
      std::memcpy(values.data(), raw.data(), raw.size());
      t = torch::empty({numel}, torch::kInt);
      for (int64_t i = 0; i < numel; ++i) t.data_ptr<int32_t>()[i] = values[static_cast<size_t>(i)];
    } else {
      t = torch::empty({numel}, scalar_type);
      const size_t bytes = static_cast<size_t>(numel) * t.element_size();
      if (raw.size() != bytes) {
        throw std::runtime_error("tensor '" + proto.name() + "': raw_data holds " + std::to_string(raw.size()) +
                                 " bytes, expected " + std::to_string(bytes));
      }
      std::memcpy(t.data_ptr(), raw.data(), bytes);
    }
    return t.reshape(shape);
  }

  if (type == onnx::TensorProto_DataType_FLOAT) {
    if (proto.float_data_size() != numel) throw std::runtime_error("float_data size mismatch in " + proto.name());
    std::vector<float> values(proto.float_data().begin(), proto.float_data().end());
    return torch::tensor(values, torch::kFloat).reshape(shape);
  }
  if (proto.int32_data_size() != numel) throw std::runtime_error("int32_data size mismatch in " + proto.name());
  std::vector<int32_t> values(proto.int32_data().begin(), proto.int32_data().end());
  return torch::tensor(values, torch::kInt).to(scalar_type).reshape(shape);
}

// The encoding's grid for a zero-point element type.
std::optional<QuantGrid> grid_of(int32_t data_type) {
  switch (data_type) {
    case onnx::TensorProto_DataType_UINT8: return QuantGrid{8, false, false};
    case onnx::TensorProto_DataType_INT8: return QuantGrid{8, true, false};
    case onnx::TensorProto_DataType_UINT16: return QuantGrid{16, false, false};
    case onnx::TensorProto_DataType_INT16: return QuantGrid{16, true, false};
    default: return std::nullopt;  // int32 and anything wider: no qat grid
  }
}

struct Input {
  Tensor value;
  int32_t data_type = 0;
};

struct Case {
  std::string name;
  std::string op_type;
  int64_t axis = 1;
  Input x;
  Input scale;
  std::optional<Input> zero_point;  // absent: uint8 zero (ONNX default)
  Input expected;
};

// Loads model.onnx and test_data_set_<set>; the test data's input_<i>.pb
// feeds the i-th graph input that is not an initializer.
Case load_case(const fs::path& dir, const fs::path& set_dir) {
  onnx::ModelProto model;
  parse_file(dir / "model.onnx", &model);
  const onnx::GraphProto& graph = model.graph();
  const onnx::NodeProto* node = nullptr;
  for (const auto& n : graph.node()) {
    if (n.op_type() == "QuantizeLinear" || n.op_type() == "DequantizeLinear") {
      if (node != nullptr) throw Unsupported("model has more than one Q/DQ node");
      node = &n;
    }
  }
  if (node == nullptr) throw std::runtime_error("model has no QuantizeLinear/DequantizeLinear node");

  Case c;
  c.name = dir.filename().string();
  if (graph.node_size() > 1) throw Unsupported("model has " + std::to_string(graph.node_size()) + " nodes");
  c.op_type = node->op_type();
  for (const auto& attr : node->attribute()) {
    if (attr.name() == "axis") {
      c.axis = attr.i();
    } else if (attr.name() == "saturate") {
      // Only affects float8 outputs, which are rejected by element type.
    } else if (attr.name() == "block_size" && attr.i() == 0) {
      // 0 means not blocked.
    } else {
      throw Unsupported("attribute '" + attr.name() + "' is not modelled");
    }
  }

  std::map<std::string, Input> values;
  for (const auto& init : graph.initializer()) values[init.name()] = {to_tensor(init), init.data_type()};
  std::vector<std::string> feed_names;
  for (const auto& in : graph.input()) {
    if (values.count(in.name()) == 0) feed_names.push_back(in.name());
  }
  for (size_t i = 0;; ++i) {
    const fs::path file = set_dir / ("input_" + std::to_string(i) + ".pb");
    if (!fs::exists(file)) break;
    onnx::TensorProto t;
    parse_file(file, &t);
    const std::string name = i < feed_names.size() ? feed_names[i] : t.name();
    values[name] = {to_tensor(t), t.data_type()};
  }
  onnx::TensorProto out;
  parse_file(set_dir / "output_0.pb", &out);
  c.expected = {to_tensor(out), out.data_type()};

  const auto input = [&](int index) -> std::optional<Input> {
    if (node->input_size() <= index || node->input(index).empty()) return std::nullopt;
    const auto it = values.find(node->input(index));
    if (it == values.end()) throw std::runtime_error("no value for node input '" + node->input(index) + "'");
    return it->second;
  };
  c.x = input(0).value();
  c.scale = input(1).value();
  c.zero_point = input(2);
  return c;
}

// "[v0, v1, ...]" of a tensor's values in row-major order.
std::string describe(const Tensor& t) {
  const Tensor flat = t.reshape({-1}).to(torch::kDouble).contiguous();
  std::ostringstream out;
  out << "[";
  for (int64_t i = 0; i < flat.numel(); ++i) out << (i ? ", " : "") << flat.data_ptr<double>()[i];
  out << "]";
  return out.str();
}

std::string shape_of(const Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

struct Outcome {
  bool passed = false;
  std::string detail;
};

// The zero point's element type, and the encoding it maps to; nullopt grid
// for types qat has no grid for (int32).
struct EncodingFor {
  std::optional<QuantGrid> grid;
  int32_t zero_point_type;
  Encoding encoding;
};

EncodingFor encoding_of(const Case& c) {
  if (c.scale.data_type != onnx::TensorProto_DataType_FLOAT) {
    throw Unsupported(std::string("scale of type ") + type_name(c.scale.data_type));
  }
  const int32_t zp_type = c.zero_point ? c.zero_point->data_type
                          : c.op_type == "QuantizeLinear" ? onnx::TensorProto_DataType_UINT8
                                                          : c.x.data_type;
  Tensor scale = c.scale.value.to(torch::kFloat);
  Tensor zero_point = c.zero_point ? c.zero_point->value.to(torch::kFloat) : torch::zeros_like(scale);
  if (scale.dim() > 1 || zero_point.sizes() != scale.sizes()) {
    throw Unsupported("scale of shape " + shape_of(scale) + " (blocked quantization)");
  }
  QuantSpec spec;
  const std::optional<QuantGrid> grid = grid_of(zp_type);
  if (grid) spec.grid = *grid;
  if (scale.dim() == 1) spec.channel_axis = c.axis;  // 1-D: per-axis; 0-D: per-tensor
  return {grid, zp_type, Encoding{spec, scale, zero_point}};
}

std::string layout_of(const Case& c, const Encoding& enc) {
  std::ostringstream out;
  out << type_name(c.x.data_type) << shape_of(c.x.value) << " -> "
      << type_name(c.expected.data_type) << ", ";
  if (enc.spec.channel_axis) out << "per-channel axis " << *enc.spec.channel_axis << " (" << enc.scale.numel() << ")";
  else out << "per-tensor";
  out << (c.zero_point ? "" : ", no zero point");
  return out.str();
}

Outcome run_quantize(const Case& c) {
  if (c.x.data_type != onnx::TensorProto_DataType_FLOAT) {
    throw Unsupported(std::string("QuantizeLinear input of type ") + type_name(c.x.data_type));
  }
  const EncodingFor e = encoding_of(c);
  if (!e.grid) throw Unsupported(std::string("QuantizeLinear to ") + type_name(e.zero_point_type));
  if (e.zero_point_type != c.expected.data_type) throw std::runtime_error("output type differs from zero point's");
  const Tensor codes = quantize(c.x.value, e.encoding);
  const Tensor ours = codes.to(c.expected.value.scalar_type());
  Outcome o;
  o.passed = ours.sizes() == c.expected.value.sizes() && torch::equal(ours, c.expected.value);
  o.detail = layout_of(c, e.encoding) + ", " + e.encoding.to_string();
  if (!o.passed) {
    // Would the spec's round(x / s) (true division instead of ATen's
    // multiplication by 1/s) have produced the expected codes?
    const int64_t dim = c.x.value.dim();
    const auto axis = e.encoding.spec.channel_axis;
    const Tensor by_division = (c.x.value / broadcast_along(e.encoding.scale, dim, axis)).round() +
                               broadcast_along(e.encoding.zero_point, dim, axis);
    const Tensor spec_codes = by_division.clamp(e.encoding.spec.grid.qmin(), e.encoding.spec.grid.qmax())
                                  .to(c.expected.value.scalar_type());
    o.detail += "\n    ours     " + describe(ours) + "\n    expected " + describe(c.expected.value) +
                "\n    round(x / s) gives " + describe(spec_codes) +
                (torch::equal(spec_codes, c.expected.value) ? " (matches: the x * (1/s) rounding differs)" : "");
  }
  return o;
}

Outcome run_dequantize(const Case& c) {
  const EncodingFor e = encoding_of(c);
  if (c.expected.data_type != onnx::TensorProto_DataType_FLOAT) {
    throw Unsupported(std::string("DequantizeLinear to ") + type_name(c.expected.data_type));
  }
  if (e.zero_point_type != c.x.data_type) throw std::runtime_error("zero point type differs from input's");
  const Tensor q = c.x.value.to(torch::kFloat);
  Tensor ours;
  std::string how;
  if (e.grid) {
    ours = dequantize(q, e.encoding);
    how = e.encoding.to_string();
  } else {
    // int32 (e.g. bias) has no qat grid (2 to 16 bits): (x - z) * s directly.
    const int64_t dim = q.dim();
    const auto axis = e.encoding.spec.channel_axis;
    ours = (q - broadcast_along(e.encoding.zero_point, dim, axis)) * broadcast_along(e.encoding.scale, dim, axis);
    how = std::string(type_name(e.zero_point_type)) + ": (x - z) * s computed directly, no qat grid";
  }
  Outcome o;
  o.passed = ours.sizes() == c.expected.value.sizes() && torch::equal(ours, c.expected.value);
  o.detail = layout_of(c, e.encoding) + ", " + how;
  if (!o.passed) o.detail += "\n    ours     " + describe(ours) + "\n    expected " + describe(c.expected.value);
  return o;
}

void run_suite(const std::string& op_type, const std::string& prefix, Outcome (*run)(const Case&)) {
  const fs::path root = data_dir();
  ASSERT_TRUE(fs::is_directory(root))
      << "ONNX backend test data not found at " << root
      << ": install it with `apt-get install libonnx-testdata` (or point $QAT_ONNX_TESTDATA at "
         "onnx/backend/test/data/node of an ONNX checkout)";
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind(prefix, 0) == 0) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  ASSERT_FALSE(dirs.empty()) << "no " << prefix << "* directories under " << root;

  int passed = 0, failed = 0, skipped = 0;
  for (const fs::path& dir : dirs) {
    std::vector<fs::path> sets;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0) {
        sets.push_back(entry.path());
      }
    }
    std::sort(sets.begin(), sets.end());
    if (sets.empty()) {
      ADD_FAILURE() << dir << " has no test_data_set_*";
      ++failed;
      continue;
    }
    for (const fs::path& set : sets) {
      const std::string label = dir.filename().string() + "/" + set.filename().string();
      try {
        const Case c = load_case(dir, set);
        if (c.op_type != op_type) throw std::runtime_error("node is " + c.op_type + ", expected " + op_type);
        const Outcome o = run(c);
        std::cout << "[ " << (o.passed ? "PASS" : "FAIL") << " ] " << label << ": " << o.detail << "\n";
        EXPECT_TRUE(o.passed) << label << " differs from the ONNX reference output: " << o.detail;
        ++(o.passed ? passed : failed);
      } catch (const Unsupported& e) {
        std::cout << "[ SKIP ] " << label << ": " << e.what() << "\n";
        ++skipped;
      } catch (const std::exception& e) {
        ADD_FAILURE() << label << ": " << e.what();
        std::cout << "[ FAIL ] " << label << ": " << e.what() << "\n";
        ++failed;
      }
    }
  }
  std::cout << op_type << ": " << passed << " passed, " << failed << " failed";
  if (skipped > 0) std::cout << ", " << skipped << " skipped";
  std::cout << std::endl;
  EXPECT_GT(passed, 0) << "no " << op_type << " case ran";
}

// The installed data stores every tensor as raw_data; the typed fields are
// legal too (and used by other exporters), so the decoder is checked here.
TEST(OnnxTestdata, TensorProtoDecodesRawAndTypedFields) {
  onnx::TensorProto f;
  f.set_data_type(onnx::TensorProto_DataType_FLOAT);
  f.add_dims(2);
  f.add_dims(2);
  for (float v : {0.5f, -1.0f, 3.0f, 1e30f}) f.add_float_data(v);
  EXPECT_TRUE(torch::equal(to_tensor(f), torch::tensor({0.5f, -1.0f, 3.0f, 1e30f}).reshape({2, 2})));

  onnx::TensorProto u8;
  u8.set_data_type(onnx::TensorProto_DataType_UINT8);
  u8.add_dims(3);
  for (int32_t v : {0, 128, 255}) u8.add_int32_data(v);
  EXPECT_TRUE(torch::equal(to_tensor(u8), torch::tensor({0, 128, 255}, torch::kByte)));

  onnx::TensorProto i8;
  i8.set_data_type(onnx::TensorProto_DataType_INT8);
  i8.add_dims(3);
  for (int32_t v : {-128, 0, 127}) i8.add_int32_data(v);
  EXPECT_TRUE(torch::equal(to_tensor(i8), torch::tensor({-128, 0, 127}, torch::kChar)));

  onnx::TensorProto i32;  // scalar: no dims
  i32.set_data_type(onnx::TensorProto_DataType_INT32);
  i32.add_int32_data(-123456789);
  const Tensor scalar = to_tensor(i32);
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<int32_t>(), -123456789);

  onnx::TensorProto raw;
  raw.set_data_type(onnx::TensorProto_DataType_INT8);
  raw.add_dims(2);
  raw.set_raw_data(std::string("\x80\x7f", 2));
  EXPECT_TRUE(torch::equal(to_tensor(raw), torch::tensor({-128, 127}, torch::kChar)));

  raw.add_dims(2);  // 4 elements declared, 2 bytes stored
  EXPECT_THROW(to_tensor(raw), std::runtime_error);
  onnx::TensorProto f16;
  f16.set_data_type(onnx::TensorProto_DataType_FLOAT16);
  EXPECT_THROW(to_tensor(f16), Unsupported);
}

TEST(OnnxTestdata, QuantizeLinearMatchesBackendNodeData) {
  run_suite("QuantizeLinear", "test_quantizelinear", run_quantize);
}

TEST(OnnxTestdata, DequantizeLinearMatchesBackendNodeData) {
  run_suite("DequantizeLinear", "test_dequantizelinear", run_dequantize);
}

}  // namespace
}  // namespace qat
