// The composition root's side of remote models: building their backends from the config (with
// API keys read now, from the environment or files) and their control-plane entries (prices,
// spend breaker), and finding them again among the served models for /metrics and /readyz.
#pragma once

#include <memory>
#include <vector>

#include "backend/model_backend.h"
#include "backend/remote/fallback.h"
#include "control/control_plane.h"
#include "control/memory_admission_store.h"
#include "core/clock.h"
#include "core/result.h"
#include "server/config.h"

namespace gantry::backend::remote {
class RemoteBackend;
}

namespace gantry::server {

// One backend per remote model (a FallbackBackend around it when it names fallbacks; `find`
// resolves those names among every served model at call time). Start-up errors (an ambiguous
// /v1/models, a missing key) name the model and the backend.
Result<std::vector<std::unique_ptr<backend::ModelBackend>>>
create_remote_backends(const ServerConfig &config, const Clock &clock,
                       backend::remote::FindBackend find);

// Prices of the remote models (ControlPlane's model list) and their spend breakers (the
// AdmissionStore's).
std::vector<control::ModelControl> remote_model_controls(const ServerConfig &config);
std::vector<control::BreakerSpec> remote_model_breakers(const ServerConfig &config);

// The RemoteBackend behind a served model (through a FallbackBackend), or nullptr.
const backend::remote::RemoteBackend *as_remote(const backend::ModelBackend &backend);

} // namespace gantry::server
