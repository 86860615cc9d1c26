// SipHash-2-4 (Aumasson and Bernstein), a keyed 64-bit PRF: without the 128-bit key an attacker
// cannot compute the output, so cannot craft inputs that collide (audit L7). Used for the prefix
// cache's chain hash; small and fast enough to run per KV block on the engine thread.
//
// Threading: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace gantry::engine {

using SipKey = std::array<uint64_t, 2>;

uint64_t siphash24(const SipKey &key, std::span<const uint8_t> bytes);

// A key from the operating system's random source (std::random_device).
SipKey random_sip_key();

} // namespace gantry::engine
