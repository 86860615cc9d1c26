// Standard Webhooks signing (https://www.standardwebhooks.com): headers webhook-id,
// webhook-timestamp and webhook-signature = "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>",
// where the key is the base64 part of a "whsec_..." secret. Several secrets (a rotation) give
// several space-separated signatures. Shared by budget alerts and job webhooks.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace gantry::control {

// "whsec_" + base64 of 24 random bytes.
std::string generate_webhook_secret();
// kInvalidArgument when the secret is not "whsec_<base64>" (or plain base64).
Result<std::string> webhook_key(std::string_view secret);

std::string base64_encode(std::string_view bytes);
Result<std::string> base64_decode(std::string_view text);

// The three headers for one delivery.
Result<std::vector<std::pair<std::string, std::string>>>
sign_webhook(const std::vector<std::string> &secrets, std::string_view msg_id, int64_t timestamp,
             std::string_view body);

// Receiver side (tests, and clients that embed Gantry's verifier): true when one signature in
// `signature_header` matches.
bool verify_webhook(std::string_view secret, std::string_view msg_id, std::string_view timestamp,
                    std::string_view body, std::string_view signature_header);

} // namespace gantry::control
