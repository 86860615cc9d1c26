#include "control/webhook_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace gantry::control {

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                reinterpret_cast<const unsigned char *>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return Err(Error::invalid("not base64 (length)"));
  std::string out(3 * text.size() / 4, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                reinterpret_cast<const unsigned char *>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0)
    return Err(Error::invalid("not base64"));
  // EVP_DecodeBlock counts padding as zero bytes.
  size_t len = static_cast<size_t>(n);
  if (!text.empty() && text.back() == '=')
    --len;
  if (text.size() >= 2 && text[text.size() - 2] == '=')
    --len;
  out.resize(len);
  return out;
}

std::string generate_webhook_secret() {
  unsigned char buf[24];
  if (RAND_bytes(buf, sizeof(buf)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return "whsec_" + base64_encode(std::string_view(reinterpret_cast<char *>(buf), sizeof(buf)));
}

Result<std::string> webhook_key(std::string_view secret) {
  if (secret.substr(0, 6) == "whsec_")
    secret.remove_prefix(6);
  auto key = base64_decode(secret);
  if (!key || key->size() < 16) {
    return Err(Error::invalid("a webhook secret must be 'whsec_' followed by base64 of at least "
                              "16 bytes"));
  }
  return key;
}

namespace {
std::string signature(std::string_view key, std::string_view msg_id, std::string_view ts,
                      std::string_view body) {
  std::string content;
  content.reserve(msg_id.size() + ts.size() + body.size() + 2);
  content.append(msg_id).append(".").append(ts).append(".").append(body);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char *>(content.data()), content.size(), md, &len);
  return base64_encode(std::string_view(reinterpret_cast<char *>(md), len));
}
} // namespace

Result<std::vector<std::pair<std::string, std::string>>>
sign_webhook(const std::vector<std::string> &secrets, std::string_view msg_id, int64_t timestamp,
             std::string_view body) {
  const std::string ts = std::to_string(timestamp);
  std::string sigs;
  for (const auto &s : secrets) {
    GANTRY_ASSIGN_OR_RETURN(std::string key, webhook_key(s));
    if (!sigs.empty())
      sigs += ' ';
    sigs += "v1," + signature(key, msg_id, ts, body);
  }
  return std::vector<std::pair<std::string, std::string>>{
      {"webhook-id", std::string(msg_id)}, {"webhook-timestamp", ts}, {"webhook-signature", sigs}};
}

bool verify_webhook(std::string_view secret, std::string_view msg_id, std::string_view timestamp,
                    std::string_view body, std::string_view signature_header) {
  auto key = webhook_key(secret);
  if (!key)
    return false;
  const std::string expected = "v1," + signature(*key, msg_id, timestamp, body);
  size_t pos = 0;
  while (pos <= signature_header.size()) {
    size_t end = signature_header.find(' ', pos);
    if (end == std::string_view::npos)
      end = signature_header.size();
    std::string_view one = signature_header.substr(pos, end - pos);
    if (one.size() == expected.size() &&
        CRYPTO_memcmp(one.data(), expected.data(), one.size()) == 0) {
      return true;
    }
    pos = end + 1;
  }
  return false;
}

} // namespace gantry::control
