// Test helpers for exported models: temporary directories, the sim's
// output step, and running an ONNX file in ONNX Runtime / OpenVINO through
// tests/fixtures/run_exported.py with the venv's python (paths compiled in
// by CMake as QAT_VENV_PYTHON and QAT_RUN_EXPORTED, overridable by the
// environment variables of the same names).
#pragma once

#include "qat/onnx_export.h"
#include "qat/onnx_import.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

namespace qat::test {

// An empty directory for one test's files, kept afterwards for inspection.
inline std::string temp_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/qat_export_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline torch::Tensor run_eval(GraphModule& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(x);
}

// The step of the grid the model output lies on: the scale of the last
// quantizer before it (layout ops such as Flatten keep their input's grid).
inline double output_step(QuantSim& sim) {
  const Graph& g = sim.model().graph();
  for (const Node* node = g.producer(g.outputs.at(0)); node; node = g.producer(node->inputs.at(0))) {
    if (node->op_type == "QatFakeQuant") {
      return sim.quantizer(node->attr_string("quantizer")).encoding().scale.item<double>();
    }
  }
  throw std::logic_error("the model output is not quantized");
}

struct Runner {
  std::string python, script;
  bool available() const { return std::filesystem::exists(python) && std::filesystem::exists(script); }
};

inline Runner runner() {
  const char* python = std::getenv("QAT_VENV_PYTHON");
  const char* script = std::getenv("QAT_RUN_EXPORTED");
  return {python ? python : QAT_VENV_PYTHON, script ? script : QAT_RUN_EXPORTED};
}

#define QAT_SKIP_WITHOUT_RUNTIMES()                                                                     \
  if (!::qat::test::runner().available())                                                              \
  GTEST_SKIP() << "no " << ::qat::test::runner().python                                                \
               << " (scripts/setup.sh makes the venv with onnxruntime and openvino)"

// Runs `model` on `input` in each of `backends` ("ort", "openvino", comma-
// separated), after ONNX's Python checker when `python_check`; returns the
// outputs by backend. Files go to `dir`.
inline std::map<std::string, torch::Tensor> run_exported(const std::string& model, const torch::Tensor& input,
                                                         const std::string& dir, const std::string& backends,
                                                         bool python_check) {
  const Runner r = runner();
  save_onnx_tensor(input, "input", dir + "/input.pb");
  const std::string out = dir + "/" + std::filesystem::path(model).stem().string();
  const std::string command = "'" + r.python + "' '" + r.script + "' '" + model + "' '" + dir + "/input.pb' '" + out +
                              "' --backends " + backends + (python_check ? " --check" : "");
  std::cout << "$ " << command << std::endl;
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
  std::map<std::string, torch::Tensor> outputs;
  for (const char* backend : {"ort", "openvino"}) {
    if (backends.find(backend) != std::string::npos) outputs[backend] = load_onnx_tensor(out + "/" + backend + ".pb");
  }
  return outputs;
}

}  // namespace qat::test
