#include "sim/saved_spec.h"

namespace qat {

void save_spec(torch::autograd::AutogradContext* ctx, const std::string& key, const QuantSpec& spec,
               const FusedActivation& activation) {
  ctx->saved_data[key + "bitwidth"] = int64_t{spec.grid.bitwidth};
  ctx->saved_data[key + "signed"] = spec.grid.is_signed;
  ctx->saved_data[key + "narrow"] = spec.grid.narrow_range;
  ctx->saved_data[key + "symmetric"] = spec.symmetric;
  ctx->saved_data[key + "has_axis"] = spec.channel_axis.has_value();
  ctx->saved_data[key + "axis"] = spec.channel_axis.value_or(0);
  ctx->saved_data[key + "activation"] = static_cast<int64_t>(activation.kind);
  ctx->saved_data[key + "activation_lo"] = activation.lo;
  ctx->saved_data[key + "activation_hi"] = activation.hi;
}

QuantSpec saved_spec(torch::autograd::AutogradContext* ctx, const std::string& key) {
  QuantSpec spec;
  spec.grid.bitwidth = static_cast<int>(ctx->saved_data[key + "bitwidth"].toInt());
  spec.grid.is_signed = ctx->saved_data[key + "signed"].toBool();
  spec.grid.narrow_range = ctx->saved_data[key + "narrow"].toBool();
  spec.symmetric = ctx->saved_data[key + "symmetric"].toBool();
  if (ctx->saved_data[key + "has_axis"].toBool()) spec.channel_axis = ctx->saved_data[key + "axis"].toInt();
  return spec;
}

FusedActivation saved_activation(torch::autograd::AutogradContext* ctx, const std::string& key) {
  FusedActivation a;
  a.kind = static_cast<FusedActivation::Kind>(ctx->saved_data[key + "activation"].toInt());
  a.lo = ctx->saved_data[key + "activation_lo"].toDouble();
  a.hi = ctx->saved_data[key + "activation_hi"].toDouble();
  return a;
}

}  // namespace qat
