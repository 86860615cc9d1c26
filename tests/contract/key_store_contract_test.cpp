// The KeyStore contract: every adapter passes the same suite (tests/contract/store_factories.h
// lists them; adding PostgreSQL means adding its factory there). What KeyAuthenticator and the
// key service rely on: projects upsert, keys round-trip field by field, duplicate ids and
// unknown keys are refused, the generation moves on every key or project change (and only
// then), last-used times never move backwards, revoked and expired keys stop counting as active
// but never stop counting as ever issued, rotation keeps the old secret for its grace.
#include <gtest/gtest.h>

#include "contract/store_factories.h"
#include "control/api_key.h"
#include "control/key_service.h"

namespace gantry::control {
namespace {

ApiKey make_key(std::string id, std::string project) {
  ApiKey k;
  k.id = std::move(id);
  k.project = std::move(project);
  k.name = "test key";
  k.hash = "abc123";
  k.created_at = 1000;
  return k;
}

template <typename Factory> class KeyStoreContract : public ::testing::Test {
protected:
  KeyStoreContract() : store_(factory_.key_store()), other_(factory_.key_store()) {}

  Factory factory_;
  std::shared_ptr<KeyStore> store_;
  std::shared_ptr<KeyStore> other_; // what a second process (the CLI beside a server) sees
};

TYPED_TEST_SUITE(KeyStoreContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(KeyStoreContract, ProjectsInsertUpdateList) {
  auto &store = *this->store_;
  ASSERT_TRUE(store.put_project({"b", {1, 2, 3}, 100}).ok());
  ASSERT_TRUE(store.put_project({"a", {0, 0, 0}, 200}).ok());
  ASSERT_TRUE(store.put_project({"b", {10, 20, 30}, 999}).ok()); // update
  auto b = this->other_->get_project("b");
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->limits.rpm, 10);
  EXPECT_EQ((*b)->limits.tpm, 20);
  EXPECT_EQ((*b)->limits.max_concurrent, 30);
  EXPECT_EQ((*b)->created_at, 100) << "an update keeps the creation time";
  auto all = store.list_projects();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "a");
  EXPECT_EQ((*all)[1].id, "b");
  EXPECT_FALSE(store.get_project("missing")->has_value());
}

TYPED_TEST(KeyStoreContract, KeysRoundTripAndGenerationSeenByAnotherConnection) {
  auto &store = *this->store_;
  auto &other = *this->other_;
  const int64_t g0 = *other.keys_generation();

  ApiKey k = make_key("k1", "search");
  k.models = {"llama", "qwen \"quoted\" \\ back", "모델"};
  k.limits = {5, 500, 2};
  k.expires_at = 5000;
  ASSERT_TRUE(store.insert_key(k).ok());
  const int64_t g1 = *other.keys_generation();
  EXPECT_NE(g1, g0) << "an insert must change the generation";

  auto dup = store.insert_key(k);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(*other.keys_generation(), g1) << "a refused insert changes nothing";

  auto got = other.get_key("k1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->project, "search");
  EXPECT_EQ((*got)->name, "test key");
  EXPECT_EQ((*got)->models, k.models);
  EXPECT_EQ((*got)->limits.rpm, 5);
  EXPECT_EQ((*got)->limits.tpm, 500);
  EXPECT_EQ((*got)->limits.max_concurrent, 2);
  EXPECT_EQ((*got)->created_at, 1000);
  EXPECT_EQ((*got)->expires_at, 5000);
  EXPECT_EQ((*got)->hash, "abc123");
  EXPECT_FALSE(other.get_key("k2")->has_value());

  ASSERT_TRUE(store.touch_keys({{"k1", 4242}, {"unknown", 1}}).ok());
  EXPECT_EQ(*other.keys_generation(), g1) << "last-used updates must not drop key caches";
  EXPECT_EQ((*other.get_key("k1"))->last_used_at, 4242);
  ASSERT_TRUE(store.touch_keys({{"k1", 4000}}).ok());
  EXPECT_EQ((*other.get_key("k1"))->last_used_at, 4242) << "an older touch is ignored";

  k.revoked_at = 3000;
  k.prev_hash = "old";
  k.prev_expires_at = 3600;
  k.models.clear();
  k.last_used_at = 0; // a stale copy must not move last_used_at back
  ASSERT_TRUE(store.update_key(k).ok());
  const int64_t g2 = *other.keys_generation();
  EXPECT_NE(g2, g1) << "an update must change the generation";
  got = other.get_key("k1");
  EXPECT_EQ((*got)->revoked_at, 3000);
  EXPECT_EQ((*got)->prev_hash, "old");
  EXPECT_EQ((*got)->prev_expires_at, 3600);
  EXPECT_TRUE((*got)->models.empty());
  EXPECT_EQ((*got)->last_used_at, 4242);

  auto missing = store.update_key(make_key("nope", "search"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

  ASSERT_TRUE(store.put_project({"search", {1, 1, 1}, 1}).ok());
  EXPECT_NE(*other.keys_generation(), g2) << "project limits share the key cache";
}

TYPED_TEST(KeyStoreContract, ListKeysAllOrOneProjectOrderedByProjectThenId) {
  auto &store = *this->store_;
  for (const auto &[id, project] :
       std::vector<std::pair<std::string, std::string>>{{"k3", "b"}, {"k2", "a"}, {"k1", "b"}})
    ASSERT_TRUE(store.insert_key(make_key(id, project)).ok());
  auto all = this->other_->list_keys();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "k2");
  EXPECT_EQ((*all)[1].id, "k1");
  EXPECT_EQ((*all)[2].id, "k3");
  auto b = this->other_->list_keys("b");
  ASSERT_EQ(b->size(), 2u);
  EXPECT_EQ((*b)[0].id, "k1");
  EXPECT_TRUE(this->other_->list_keys("none")->empty());
}

TYPED_TEST(KeyStoreContract, RefusesModelNamesWithControlCharacters) {
  ApiKey k = make_key("k1", "p");
  k.models = {"a\x1f"};
  auto st = this->store_->insert_key(k);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
}

TYPED_TEST(KeyStoreContract, RevokedAndExpiredKeysStopBeingActiveButStayIssued) {
  auto &store = *this->store_;
  const int64_t now = 10'000;
  EXPECT_EQ(*store.count_active_keys(now), 0);
  EXPECT_EQ(*store.count_keys_ever(), 0);
  ApiKey active = make_key("active", "p");
  ApiKey future = make_key("future", "p");
  future.expires_at = now + 1;
  ApiKey expired = make_key("expired", "p");
  expired.expires_at = now;
  ApiKey revoked = make_key("revoked", "p");
  revoked.revoked_at = now - 5;
  for (const auto &k : {active, future, expired, revoked})
    ASSERT_TRUE(store.insert_key(k).ok());
  EXPECT_EQ(*this->other_->count_active_keys(now), 2);
  EXPECT_EQ(*this->other_->count_active_keys(now + 1), 1);
  // Audit H3: in auth "auto" the API stays closed once any key was issued.
  EXPECT_EQ(*this->other_->count_keys_ever(), 4);
}

TYPED_TEST(KeyStoreContract, RotationKeepsTheOldSecretForItsGraceAndRevocationEndsBoth) {
  auto &store = *this->store_;
  const std::string pepper = "pepper-for-tests-0123456789abcdef";
  CreateKeyOptions o;
  o.project = "p";
  o.name = "svc";
  auto issued = create_key(store, pepper, o, 1000);
  ASSERT_TRUE(issued) << issued.error().message;
  EXPECT_TRUE(this->other_->get_project("p")->has_value()) << "creating a key makes its project";
  const std::string id = issued->record.id;

  auto rotated = rotate_key(store, pepper, id, 60, 2000);
  ASSERT_TRUE(rotated) << rotated.error().message;
  auto after = *this->other_->get_key(id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->prev_hash, issued->record.hash) << "the old secret works during the grace";
  EXPECT_EQ(after->prev_expires_at, 2060);
  EXPECT_NE(after->hash, issued->record.hash);
  EXPECT_EQ(*this->other_->count_active_keys(2000), 1);

  auto revoked = revoke_key(store, id, 3000);
  ASSERT_TRUE(revoked) << revoked.error().message;
  after = *this->other_->get_key(id);
  EXPECT_EQ(after->revoked_at, 3000);
  EXPECT_EQ(*this->other_->count_active_keys(3000), 0);
  EXPECT_EQ(*this->other_->count_keys_ever(), 1);
  auto again = rotate_key(store, pepper, id, 0, 3100);
  ASSERT_FALSE(again) << "a revoked key is not brought back by a rotation";
  EXPECT_EQ(again.error().code, ErrorCode::kInvalidArgument);
  auto unknown = revoke_key(store, "nope", 3000);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
}

TYPED_TEST(KeyStoreContract, CheckIsARoundTrip) { EXPECT_TRUE(this->store_->check().ok()); }

} // namespace
} // namespace gantry::control
