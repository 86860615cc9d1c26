// Key changes pushed between nodes (issue 13): a key created, rotated or revoked through one node
// reaches every node's key cache at once instead of at its next poll of the key generation. The
// poll stays as the safety net (a missed message, a CLI change made without Redis).
//
// PublishingKeyStore is the KeyStore decorator that publishes after every successful change;
// the Redis adapter (store/redis/redis_key_events.h) carries the messages.
//
// Threading: adapters are thread-safe; subscribe()'s callback runs on the adapter's thread.
#pragma once

#include <functional>
#include <memory>

#include "control/key_store.h"

namespace gantry::control {

class KeyEvents {
public:
  virtual ~KeyEvents() = default;
  // A key or project changed through this node. Best effort: a lost message is caught by the
  // generation poll.
  virtual void publish() = 0;
  // `on_change` runs whenever any node published (and after a reconnect, since messages may
  // have been missed meanwhile), until the adapter is destroyed. Called once.
  virtual void subscribe(std::function<void()> on_change) = 0;
};

class PublishingKeyStore final : public KeyStore {
public:
  PublishingKeyStore(std::shared_ptr<KeyStore> inner, std::shared_ptr<KeyEvents> events)
      : inner_(std::move(inner)), events_(std::move(events)) {}

  Status put_project(const Project &project) override {
    return after(inner_->put_project(project));
  }
  Result<std::optional<Project>> get_project(std::string_view id) override {
    return inner_->get_project(id);
  }
  Result<std::vector<Project>> list_projects() override { return inner_->list_projects(); }
  Status insert_key(const ApiKey &key) override { return after(inner_->insert_key(key)); }
  Status update_key(const ApiKey &key) override { return after(inner_->update_key(key)); }
  Result<std::optional<ApiKey>> get_key(std::string_view id) override {
    return inner_->get_key(id);
  }
  Result<std::vector<ApiKey>> list_keys(std::string_view project = {}) override {
    return inner_->list_keys(project);
  }
  Result<int64_t> count_active_keys(int64_t now) override { return inner_->count_active_keys(now); }
  Result<int64_t> count_keys_ever() override { return inner_->count_keys_ever(); }
  Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) override {
    return inner_->touch_keys(last_used); // last-used times change no one's access
  }
  Result<int64_t> keys_generation() override { return inner_->keys_generation(); }
  Status check() override { return inner_->check(); }

private:
  Status after(Status st) {
    if (st)
      events_->publish();
    return st;
  }
  std::shared_ptr<KeyStore> inner_;
  std::shared_ptr<KeyEvents> events_;
};

} // namespace gantry::control
